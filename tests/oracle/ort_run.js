#!/usr/bin/env node
// Runs a list of ONNX models in ONNX Runtime (onnxruntime-node), the reference runtime for modex's
// ONNX output. One process serves a whole test file: starting Node and loading ORT is the
// expensive part, so the tests batch every inference into one job file.
//
//   node tests/oracle/ort_run.js JOBS.json RESULTS.json
//
// JOBS.json:
//   {"jobs": [{"id": "resnet18-a/b4", "model": "/abs/model.onnx",
//              "input": "/abs/x.bin", "dims": [4, 3, 224, 224],   // raw little-endian float32
//              "input_name": "image",      // optional; default: the model's only input
//              "output": "/abs/y.bin",     // the first output (or output_name) as raw float32
//              "output_name": "logits",    // optional
//              "threads": 1}]}              // optional intra-op threads, default 1
// RESULTS.json: {"ort_version": ..., "results": {id: {"ok": true, "input_names": [...],
//   "output_names": [...], "outputs": {name: {"dims": [...], "type": "float32"}},
//   "output": "/abs/y.bin", "load_ms": ..., "run_ms": ...} | {"ok": false, "error": "..."}}}
// Every job is attempted; the exit status is non-zero (with one line per failure on stderr) if
// any job failed, or if the job file or the ORT package cannot be read.
//
// onnxruntime-node is looked up in $MODEX_ORACLES_DIR (default: tools/oracles of this repo).
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

function fail(message) {
  process.stderr.write(`ort_run: error: ${message}\n`);
  process.exit(2);
}

function loadOrt() {
  const dir = process.env.MODEX_ORACLES_DIR || path.resolve(__dirname, '../../tools/oracles');
  try {
    return createRequire(path.join(dir, 'package.json'))('onnxruntime-node');
  } catch (e) {
    fail(`cannot load onnxruntime-node from ${dir}/node_modules (${e.message.split('\n')[0]}); ` +
         `install it with: (cd ${dir} && npm ci --ignore-scripts)`);
  }
}

function readFloat32(file, dims) {
  const buf = fs.readFileSync(file);
  const count = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== count * 4) {
    throw new Error(`${file}: ${buf.length} bytes, expected ${count * 4} for dims [${dims}]`);
  }
  // Copy: a Buffer may be a view into a shared pool at an unaligned offset.
  const out = new Float32Array(count);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

async function main() {
  const [jobsPath, resultsPath] = process.argv.slice(2);
  if (!jobsPath || !resultsPath) fail('usage: ort_run.js JOBS.json RESULTS.json');
  let jobs;
  try {
    jobs = JSON.parse(fs.readFileSync(jobsPath, 'utf8')).jobs;
  } catch (e) {
    fail(`cannot read job file ${jobsPath}: ${e.message}`);
  }
  if (!Array.isArray(jobs)) fail(`${jobsPath}: expected {"jobs": [...]}`);
  const ort = loadOrt();

  const results = {};
  const failures = [];
  let session = null;
  let sessionKey = null;
  for (const job of jobs) {
    const id = job.id;
    try {
      const threads = job.threads || 1;
      const key = `${job.model}\0${threads}`;
      let loadMs = 0;
      if (key !== sessionKey) {
        if (session) await session.release();
        session = null;
        sessionKey = null;
        const t0 = process.hrtime.bigint();
        session = await ort.InferenceSession.create(job.model, {
          intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
          executionMode: 'sequential', logSeverityLevel: 3,
        });
        sessionKey = key;
        loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
      }
      const inputName = job.input_name || session.inputNames[0];
      if (!job.input_name && session.inputNames.length !== 1) {
        throw new Error(`model has ${session.inputNames.length} inputs (${session.inputNames}); ` +
                        'set input_name');
      }
      const data = readFloat32(job.input, job.dims);
      const t1 = process.hrtime.bigint();
      const out = await session.run({ [inputName]: new ort.Tensor('float32', data, job.dims) });
      const runMs = Number(process.hrtime.bigint() - t1) / 1e6;
      const outputs = {};
      for (const [name, t] of Object.entries(out)) outputs[name] = { dims: t.dims, type: t.type };
      const outName = job.output_name || session.outputNames[0];
      const y = out[outName];
      if (!y) throw new Error(`no output named ${outName} (outputs: ${session.outputNames})`);
      if (y.type !== 'float32') throw new Error(`output ${outName} is ${y.type}, not float32`);
      if (job.output) {
        fs.writeFileSync(job.output, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
      }
      results[id] = {
        ok: true, input_names: session.inputNames, output_names: session.outputNames, outputs,
        output: job.output || null, load_ms: loadMs, run_ms: runMs,
      };
    } catch (e) {
      const message = String((e && e.message) || e).split('\n').slice(0, 5).join(' | ');
      results[id] = { ok: false, error: message };
      failures.push(`${id}: ${job.model}: ${message}`);
      if (session) await session.release().catch(() => {});
      session = null;
      sessionKey = null;
    }
  }
  if (session) await session.release();
  fs.writeFileSync(resultsPath, JSON.stringify({ ort_version: ort.env.versions, results }, null, 1));
  if (failures.length) {
    for (const f of failures) process.stderr.write(`ort_run: error: ${f}\n`);
    process.stderr.write(`ort_run: ${failures.length} of ${jobs.length} jobs failed\n`);
    process.exit(1);
  }
}

main().catch((e) => fail(e.stack || String(e)));
