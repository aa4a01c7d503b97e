#!/usr/bin/env node
// ONNX Runtime's side of bench/runtime_speed.py: the same measurement `modex bench --json` makes,
// in onnxruntime-node, in a fresh process. The parent measures this process's peak RSS with
// wait4(2); `--baseline` only loads onnxruntime-node and exits, so that the parent can subtract
// what Node and the ORT library cost before any model is read.
//
//   node bench/ort_bench.js MODEL [--threads T] [--iterations N] [--warmup W] [--batch B] [--input-size S]
//   node bench/ort_bench.js --baseline
//
// Prints one JSON object: {"ort_version", "threads", "load_ms", "first_run_ms", "latency_ms":
// {"mean", "median", "p90", "p99", "min", "max"}, "iterations", "warmup"}.
// Session options: intraOpNumThreads T, interOpNumThreads 1, graphOptimizationLevel 'all'.
// The input is [B, 3, S, S] float32, seeded uniform [-1, 1) (the same distribution as modex bench).
// onnxruntime-node is looked up in $MODEX_ORACLES_DIR (default: tools/oracles of this repo).
'use strict';

const path = require('path');
const { createRequire } = require('module');

function fail(message) {
  process.stderr.write(`ort_bench: error: ${message}\n`);
  process.exit(2);
}

function loadOrt() {
  const dir = process.env.MODEX_ORACLES_DIR || path.resolve(__dirname, '../tools/oracles');
  try {
    return createRequire(path.join(dir, 'package.json'))('onnxruntime-node');
  } catch (e) {
    fail(`cannot load onnxruntime-node from ${dir}/node_modules (${e.message.split('\n')[0]}); ` +
         `install it with: (cd ${dir} && npm ci --ignore-scripts)`);
  }
}

function parseArgs(argv) {
  const a = { threads: 1, iterations: 50, warmup: 5, batch: 1, inputSize: 224, baseline: false, model: null };
  const num = (name, v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) fail(`${name} needs a non-negative integer, got '${v}'`);
    return n;
  };
  for (let i = 0; i < argv.length; ++i) {
    const k = argv[i];
    if (k === '--baseline') a.baseline = true;
    else if (k === '--threads') a.threads = num(k, argv[++i]);
    else if (k === '--iterations') a.iterations = num(k, argv[++i]);
    else if (k === '--warmup') a.warmup = num(k, argv[++i]);
    else if (k === '--batch') a.batch = num(k, argv[++i]);
    else if (k === '--input-size') a.inputSize = num(k, argv[++i]);
    else if (k.startsWith('--')) fail(`unknown option ${k}`);
    else a.model = k;
  }
  if (!a.baseline && !a.model) fail('usage: ort_bench.js MODEL [--threads T] [--iterations N] [--warmup W] | --baseline');
  if (a.iterations < 1) fail('--iterations must be at least 1');
  return a;
}

function percentile(sorted, q) {
  const pos = q * (sorted.length - 1), lo = Math.floor(pos), hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const ort = loadOrt();
  const version = (ort.env && ort.env.versions && ort.env.versions.common) || null;
  if (a.baseline) {
    console.log(JSON.stringify({ baseline: true, ort_version: version }));
    return;
  }
  const t0 = nowMs();
  const session = await ort.InferenceSession.create(a.model, {
    intraOpNumThreads: a.threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
  });
  const loadMs = nowMs() - t0;
  const dims = [a.batch, 3, a.inputSize, a.inputSize];
  const data = new Float32Array(dims.reduce((x, y) => x * y, 1));
  let state = 12345;  // xorshift32: a fixed input, independent of Math.random
  for (let i = 0; i < data.length; ++i) {
    state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
    data[i] = ((state >>> 0) / 4294967296) * 2 - 1;
  }
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, dims) };
  const t1 = nowMs();
  await session.run(feeds);
  const firstRunMs = nowMs() - t1;
  for (let i = 0; i < a.warmup; ++i) await session.run(feeds);
  const samples = [];
  for (let i = 0; i < a.iterations; ++i) {
    const t = nowMs();
    await session.run(feeds);
    samples.push(nowMs() - t);
  }
  const sorted = samples.slice().sort((x, y) => x - y);
  const mean = samples.reduce((x, y) => x + y, 0) / samples.length;
  console.log(JSON.stringify({
    ort_version: version, model: a.model, threads: a.threads, batch: a.batch, input_size: a.inputSize,
    load_ms: loadMs, first_run_ms: firstRunMs, warmup: a.warmup, iterations: a.iterations,
    latency_ms: { mean, median: percentile(sorted, 0.5), p90: percentile(sorted, 0.9), p99: percentile(sorted, 0.99),
                  min: sorted[0], max: sorted[sorted.length - 1] },
    throughput_ips: a.batch * 1000 / mean,
  }));
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
