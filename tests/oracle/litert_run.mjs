#!/usr/bin/env node
// Runs a list of TFLite models in LiteRT.js 2.5.3 (Google's TFLite interpreter + XNNPACK, built to
// WebAssembly), the reference runtime for modex's .tflite output. One process serves a whole test
// file: starting Node and instantiating the wasm module is the expensive part.
//
//   node tests/oracle/litert_run.mjs JOBS.json RESULTS.json
//
// JOBS.json:
//   {"jobs": [{"id": "conv_same", "model": "/abs/model.tflite",
//              "inputs": [{"file": "/abs/x.bin", "dims": [1, 8, 8, 3], "dtype": "float32",
//                          "name": "image"}],       // name optional; default: signature order
//              "outputs": ["/abs/y.bin"],          // optional: raw bytes of each output, in order
//              "signature": "serving_default",     // optional; default: the first signature
//              "threads": 1}]}                     // optional
//   A single input may be given as "input"/"dims"/"dtype" and a single output as "output".
//   dtype: float32 float16 float64 int8 uint8 int16 int32 int64 bool (raw little-endian bytes).
//   Quantized models (int8/uint8 inputs and outputs, TFLite's full-integer form):
//     an input given as {"dtype": "float32", "quantize": true} on an int8/uint8 model input is
//     quantized here with that tensor's scale and zero point (round half away from zero,
//     saturating), so one float file serves every io type;
//     "dequantized_outputs": ["/abs/y.f32", ...] (optional, parallel to "outputs") also writes each
//     quantized output as float32, (q - zero_point) * scale; a float output is copied as it is.
//   An input of batch N > 1 on a model whose batch dim is dynamic (-1 in shape_signature) runs as
//   N runs at batch 1 on one compiled model; each output file gets the N results concatenated
//   and run_ms is the mean per run.
// RESULTS.json: {"litert_version": "2.5.3", "results": {id: {"ok": true,
//     "signature": key, "inputs": [{name, dtype, dims}], "outputs": [{name, dtype, dims, file}],
//     // outputs also carry "dequantized_file" when the job asked for one
//     "quantization": {"inputs": [q, ...], "outputs": [q, ...]},  // signature order; q is
//     //   {"scale": [..], "zero_point": [..], "quantized_dimension": d} or null, read from the
//     //   flatbuffer's tensor (via the signature's tensor index)
//     "ops": [{"op": "CONV_2D", "version": 1}, ...],   // the model's operators, in order, read from
//     "op_counts": {"CONV_2D": 3, ...},                //   the flatbuffer by this script
//     "delegation": [...],   // LiteRT's lines about delegates (XNNPACK); LiteRT.js 2.5.3 logs only
//                            //   the delegate's creation, once per process
//     "log": [...], "load_ms": ..., "run_ms": ...} | {"ok": false, "error": "...", "log": [...]}}}
//
// LiteRT only logs some failures (an op it cannot prepare, a delegate error) and still returns
// buffers from run(), so any logged line with "ERROR" fails the job. Every job is attempted; the
// exit status is 1 (one stderr line per failed job) if any failed, 2 if nothing could run.
//
// How LiteRT.js runs in plain Node (see ../../../shared/ORACLES.md): the package is an ES module
// documented for browsers. Its loader fetches the Emscripten glue with a browser importScripts;
// instead this script evaluates the glue as CommonJS (the glue itself supports Node and reads
// the .wasm with fs) and calls the module factory. The compat build is used because the default
// one needs relaxed SIMD, which Node 20 has only behind a flag. Only the low-level bindings are
// used (loadModel, compileModel, LiteRtTensorBuffer): the high-level Tensor API accepts only
// float32/int32/uint8 and throws on int8 models. Shapes are static: a -1 batch in
// shape_signature runs at the batch of `shape`.
//
// @litertjs/core is looked up in $MODEX_ORACLES_DIR (default: tools/oracles of this repo).

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ORACLES_DIR = process.env.MODEX_ORACLES_DIR || path.resolve(HERE, '../../tools/oracles');
const PACKAGE_DIR = path.join(ORACLES_DIR, 'node_modules', '@litertjs', 'core');
const GLUE = path.join(PACKAGE_DIR, 'wasm', 'litert_wasm_compat_internal.js');

function fail(message) {
  process.stderr.write(`litert_run: error: ${message}\n`);
  process.exit(2);
}

// LiteRT's element types (litert::ElementType) and their byte widths.
const DTYPES = {
  float32: { elementType: 1, bytes: 4 },
  int32: { elementType: 2, bytes: 4 },
  uint8: { elementType: 3, bytes: 1 },
  int64: { elementType: 4, bytes: 8 },
  bool: { elementType: 6, bytes: 1 },
  int16: { elementType: 7, bytes: 2 },
  int8: { elementType: 9, bytes: 1 },
  float16: { elementType: 10, bytes: 2 },
  float64: { elementType: 11, bytes: 8 },
};
const DTYPE_OF_ELEMENT = Object.fromEntries(Object.entries(DTYPES).map(([k, v]) => [v.elementType, k]));

// ---------------------------------------------------------------------------------------------
// The model's operator list, read straight from the flatbuffer (independently of modex's own
// reader): Model.operator_codes (field 1), Model.subgraphs (2) -> SubGraph.operators (3) ->
// Operator.opcode_index (0); OperatorCode: deprecated_builtin_code (0, int8), version (2,
// default 1), builtin_code (3, int32). DataView throws on any out-of-range read.

const OP_NAMES = {
  0: 'ADD', 1: 'AVERAGE_POOL_2D', 2: 'CONCATENATION', 3: 'CONV_2D', 4: 'DEPTHWISE_CONV_2D',
  6: 'DEQUANTIZE', 9: 'FULLY_CONNECTED', 14: 'LOGISTIC', 17: 'MAX_POOL_2D', 18: 'MUL', 19: 'RELU',
  20: 'RELU_N1_TO_1', 21: 'RELU6', 22: 'RESHAPE', 25: 'SOFTMAX', 28: 'TANH', 32: 'CUSTOM', 34: 'PAD',
  39: 'TRANSPOSE', 40: 'MEAN', 41: 'SUB', 42: 'DIV', 43: 'SQUEEZE', 49: 'SPLIT', 54: 'PRELU',
  55: 'MAXIMUM', 57: 'MINIMUM', 60: 'PADV2', 98: 'LEAKY_RELU', 114: 'QUANTIZE', 117: 'HARD_SWISH',
  126: 'BATCH_MATMUL',
};

// The flatbuffer fields modelOps and modelSignatures read.
function flatbufferReader(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const table = (pos) => {
    const vtable = pos - dv.getInt32(pos, true);
    const vtableLength = dv.getUint16(vtable, true);
    return (id) => {
      const slot = 4 + 2 * id;
      if (slot >= vtableLength) return 0;
      const offset = dv.getUint16(vtable + slot, true);
      return offset ? pos + offset : 0;
    };
  };
  const deref = (p) => p + dv.getUint32(p, true);
  const tables = (fieldPos) => {
    if (!fieldPos) return [];
    const v = deref(fieldPos);
    const n = dv.getUint32(v, true);
    const out = [];
    for (let i = 0; i < n; i++) out.push(table(deref(v + 4 + 4 * i)));
    return out;
  };
  const model = table(deref(0));
  return { dv, table, deref, tables, model };
}

function modelOps(bytes) {
  const { dv, tables, model } = flatbufferReader(bytes);
  const codes = tables(model(1)).map((c) => {
    const deprecated = c(0) ? dv.getInt8(c(0)) : 0;
    const builtin = c(3) ? dv.getInt32(c(3), true) : 0;
    const code = Math.max(deprecated, builtin);
    return { op: OP_NAMES[code] || `BUILTIN_${code}`, version: c(2) ? dv.getInt32(c(2), true) : 1 };
  });
  const subgraphs = tables(model(2));
  if (!subgraphs.length) return [];
  return tables(subgraphs[0](3)).map((op) => {
    const index = op(0) ? dv.getUint32(op(0), true) : 0;
    if (index >= codes.length) throw new Error(`operator uses opcode index ${index} of ${codes.length}`);
    return codes[index];
  });
}

// Signature name -> tensor quantization, read from the flatbuffer: Model.signature_defs (7) ->
// SignatureDef inputs (0) / outputs (1) [TensorMap name (0), tensor_index (1)], signature_key (2),
// subgraph_index (4); SubGraph.tensors (0) -> Tensor.quantization (4) -> QuantizationParameters
// scale (2) [float], zero_point (3) [long], quantized_dimension (6).
function modelSignatures(bytes) {
  const { dv, table, deref, tables, model } = flatbufferReader(bytes);
  const string = (pos) => {
    if (!pos) return '';
    const p = deref(pos);
    return Buffer.from(dv.buffer, dv.byteOffset + p + 4, dv.getUint32(p, true)).toString('utf8');
  };
  const vector = (pos, width, get) => {
    if (!pos) return [];
    const v = deref(pos);
    const out = [];
    for (let i = 0, n = dv.getUint32(v, true); i < n; i++) out.push(get(v + 4 + width * i));
    return out;
  };
  const subgraphs = tables(model(2));
  const quantOf = (subgraph, index) => {
    const tensors = tables(subgraph(0));
    if (index >= tensors.length) throw new Error(`signature names tensor ${index} of ${tensors.length}`);
    const q = tensors[index](4);
    if (!q) return null;
    const qp = table(deref(q));
    const scale = vector(qp(2), 4, (p) => dv.getFloat32(p, true));
    if (!scale.length) return null;
    const zero = vector(qp(3), 8, (p) => Number(dv.getBigInt64(p, true)));
    return { scale, zero_point: zero, quantized_dimension: qp(6) ? dv.getInt32(qp(6), true) : 0 };
  };
  const result = {};
  for (const def of tables(model(7))) {
    const subgraph = subgraphs[def(4) ? dv.getUint32(def(4), true) : 0];
    const maps = (fid) => Object.fromEntries(tables(def(fid)).map((m) => {
      const index = m(1) ? dv.getUint32(m(1), true) : 0;
      return [string(m(0)), quantOf(subgraph, index)];
    }));
    result[string(def(2))] = { inputs: maps(0), outputs: maps(1) };
  }
  return result;
}

const QUANT_RANGES = { int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767], int32: [-2147483648, 2147483647] };
const TYPED = { int8: Int8Array, uint8: Uint8Array, int16: Int16Array, int32: Int32Array, float32: Float32Array };

// float32 bytes -> the quantized type's bytes (round half away from zero, saturate).
function quantizeBytes(data, dtype, q) {
  const src = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
  const out = new TYPED[dtype](src.length);
  const [lo, hi] = QUANT_RANGES[dtype];
  const scale = q.scale[0];
  const zp = q.zero_point[0];
  for (let i = 0; i < src.length; i++) {
    const r = src[i] / scale;
    const v = (r < 0 ? -Math.round(-r) : Math.round(r)) + zp;
    out[i] = Math.min(hi, Math.max(lo, v));
  }
  return Buffer.from(out.buffer);
}

// Quantized output bytes -> float32 bytes (per-tensor or along quantized_dimension).
function dequantizeBytes(bytes, dtype, dims, q) {
  if (dtype === 'float32') return Buffer.from(bytes);
  if (!q) throw new Error(`output of dtype ${dtype} has no quantization parameters to dequantize with`);
  const src = new TYPED[dtype](bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const out = new Float32Array(src.length);
  const axis = q.quantized_dimension || 0;
  const channels = q.scale.length;
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  for (let i = 0; i < src.length; i++) {
    const c = channels > 1 ? Math.floor(i / inner) % channels : 0;
    out[i] = (src[i] - q.zero_point[c]) * q.scale[c];
  }
  return Buffer.from(out.buffer);
}

// ---------------------------------------------------------------------------------------------

function loadFactory() {
  let source;
  try {
    source = fs.readFileSync(GLUE, 'utf8');
  } catch (e) {
    fail(`cannot read ${GLUE} (${e.message}); install it with: (cd ${ORACLES_DIR} && npm ci)`);
  }
  // The package is "type": "module", so Node would load the glue as an ES module (with no
  // exports); evaluate it as the CommonJS script it is.
  const module = { exports: {} };
  const evaluate = new Function('module', 'exports', 'require', '__filename', '__dirname', source);
  evaluate(module, module.exports, createRequire(GLUE), GLUE, path.dirname(GLUE));
  if (typeof module.exports !== 'function') fail(`${GLUE} did not export a module factory`);
  return module.exports;
}

function packageVersion() {
  try {
    return JSON.parse(fs.readFileSync(path.join(PACKAGE_DIR, 'package.json'), 'utf8')).version;
  } catch {
    return null;
  }
}

function vectorToArray(v) {
  const out = [];
  for (let i = 0; i < v.size(); i++) out.push(v.get(i));
  v.delete();
  return out;
}

// dtype and dims of a LiteRtRankedTensorType. Sizes are computed here: bytes() fails (and logs an
// ERROR) on a dynamic (-1) dim.
function describeType(tensorType) {
  const layout = tensorType.layout();
  const dims = vectorToArray(layout.dimensions());
  layout.delete();
  const element = tensorType.elementType().value;
  const dtype = DTYPE_OF_ELEMENT[element] || `element_type_${element}`;
  const width = DTYPES[dtype] ? DTYPES[dtype].bytes : 0;
  return { dtype, element, dims, bytes: dims.reduce((a, b) => a * b, width) };
}

// A ranked tensor type with concrete dims (the model's may hold -1 for a dynamic batch).
function makeType(w, element, dims) {
  const vector = new w.VectorInt32();
  for (const d of dims) vector.push_back(d);
  const layout = w.LiteRtLayout.create(vector);
  vector.delete();
  const type = w.LiteRtRankedTensorType.create({ value: element }, layout);
  layout.delete();
  return type;
}

function normaliseJob(job) {
  const inputs = job.inputs || (job.input ? [{ file: job.input, dims: job.dims, dtype: job.dtype, name: job.input_name }] : []);
  const outputs = job.outputs || (job.output ? [job.output] : []);
  return { ...job, inputs, outputs };
}

class Runner {
  constructor(wasm) {
    this.wasm = wasm;
    this.log = [];
    wasm.setupLogging();
    this.env = wasm.LiteRtEnvironment.create(null);
  }

  async run(job) {
    const w = this.wasm;
    const owned = [];  // wasm objects to delete, in reverse order
    let modelPtr = 0;
    try {
      const bytes = fs.readFileSync(job.model);
      const ops = modelOps(bytes);
      const signatures = modelSignatures(bytes);
      const t0 = process.hrtime.bigint();
      modelPtr = w._malloc(bytes.length);
      w.HEAPU8.set(bytes, modelPtr);
      const model = w.loadModel(this.env, modelPtr, bytes.length);
      owned.push(model);
      const compiled = await w.compileModel(this.env, model, {
        accelerator: 'wasm', cpuOptions: { numThreads: job.threads || 1 }, gpuOptions: {}, webNNOptions: {},
      });
      owned.push(compiled);
      const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;

      const signatureCount = model.getNumSignatures();
      let sig = 0;
      let signature = model.getSignature(0);
      if (job.signature) {
        for (sig = 0; sig < signatureCount; sig++) {
          if (sig) signature = model.getSignature(sig);
          if (signature.key() === job.signature) break;
          signature.delete();
        }
        if (sig === signatureCount) throw new Error(`no signature '${job.signature}'`);
      }
      owned.push(signature);
      const key = signature.key();
      const inputNames = vectorToArray(signature.inputNames());
      const outputNames = vectorToArray(signature.outputNames());
      const quant = signatures[key] || { inputs: {}, outputs: {} };
      if (job.inputs.length !== inputNames.length) {
        throw new Error(`signature '${key}' has ${inputNames.length} inputs (${inputNames}), the job gives ${job.inputs.length}`);
      }

      const buffers = [];
      const inputs = [];
      const slices = [];
      let repeat = 1;
      inputNames.forEach((name, i) => {
        const given = job.inputs.find((x) => x.name === name) || (job.inputs.every((x) => !x.name) ? job.inputs[i] : null);
        if (!given) throw new Error(`no job input for signature input '${name}'`);
        const modelType = model.getInputTensorType(sig, i);
        const t = describeType(modelType);
        modelType.delete();
        const inputQuant = quant.inputs[name] || null;
        const quantizeHere = given.quantize && given.dtype === 'float32' && QUANT_RANGES[t.dtype];
        if (given.quantize && !quantizeHere) throw new Error(`input '${name}' is ${t.dtype}: "quantize" needs a float32 file and a quantized input`);
        if (quantizeHere && !inputQuant) throw new Error(`input '${name}' is ${t.dtype} without quantization parameters`);
        if (given.dtype && given.dtype !== t.dtype && !quantizeHere) throw new Error(`input '${name}' is ${t.dtype}, the job gives ${given.dtype}`);
        // LiteRT runs the static `shape`; the signature shows -1 where shape_signature has it, and
        // such a dim runs at 1.
        const dims = t.dims.map((d) => (d < 0 ? 1 : d));
        // A batch of N on a dynamic batch dim runs as N runs of batch 1 (outputs concatenated).
        if (given.dims && t.dims[0] < 0 && given.dims.length === dims.length && given.dims[0] > 1 &&
            JSON.stringify(given.dims.slice(1)) === JSON.stringify(dims.slice(1))) {
          if (repeat !== 1 && repeat !== given.dims[0]) throw new Error(`inputs disagree on the batch size (${repeat} vs ${given.dims[0]})`);
          repeat = given.dims[0];
        } else if (given.dims && JSON.stringify(given.dims) !== JSON.stringify(dims)) {
          throw new Error(`input '${name}' has dims [${t.dims}] (LiteRT runs static shapes, -1 as 1), the job gives [${given.dims}]`);
        }
        inputs.push({ name, dtype: t.dtype, dims, signature_dims: t.dims });
        const bytes = dims.reduce((a, b) => a * b, DTYPES[t.dtype].bytes);
        let data = fs.readFileSync(given.file);
        if (quantizeHere) data = quantizeBytes(data, t.dtype, inputQuant);
        const n = given.dims && t.dims[0] < 0 && given.dims[0] > 1 ? given.dims[0] : 1;
        if (data.length !== bytes * n) throw new Error(`${given.file}: ${data.length} bytes, input '${name}' needs ${bytes * n}`);
        slices.push({ data, bytes });
        const tensorType = makeType(w, t.element, dims);
        owned.push(tensorType);
        const buffer = w.LiteRtTensorBuffer.createManaged(this.env, w.LiteRtTensorBufferType.HOST_MEMORY, tensorType, bytes);
        owned.push(buffer);
        buffers.push(buffer);
      });

      let runMs = 0;
      let outputs = [];
      const chunks = [];  // per output: the bytes of every run
      for (let r = 0; r < repeat; r++) {
        buffers.forEach((buffer, i) => {
          const { data, bytes } = slices[i];
          const ptr = buffer.lock(w.LiteRtTensorBufferLockMode.WRITE);
          try {
            w.HEAPU8.set(data.subarray(r * bytes, (r + 1) * bytes), ptr);
          } finally {
            buffer.unlock();
          }
        });
        const t1 = process.hrtime.bigint();
        const results = await compiled.run(sig, buffers);
        runMs += Number(process.hrtime.bigint() - t1) / 1e6;
        outputs = results.map((buffer, i) => {
          const tensorType = buffer.tensorType();
          const t = describeType(tensorType);
          tensorType.delete();
          const file = job.outputs[i] || null;
          if (file) {
            const ptr = buffer.lock(w.LiteRtTensorBufferLockMode.READ);
            try {
              (chunks[i] = chunks[i] || []).push(w.HEAPU8.slice(ptr, ptr + buffer.packedSize()));
            } finally {
              buffer.unlock();
            }
          }
          const dims = repeat > 1 ? [repeat, ...t.dims.slice(1)] : t.dims;
          const dequantizedFile = (job.dequantized_outputs || [])[i] || null;
          if (dequantizedFile && !file) throw new Error(`dequantized_outputs[${i}] needs outputs[${i}] too`);
          const o = { name: outputNames[i], dtype: t.dtype, dims, file };
          if (dequantizedFile) o.dequantized_file = dequantizedFile;
          return o;
        });
        for (const b of results) {
          try {
            b.delete();
          } catch {
            // already released by LiteRT
          }
        }
      }
      outputs.forEach((o, i) => {
        if (!o.file) return;
        const raw = Buffer.concat(chunks[i]);
        fs.writeFileSync(o.file, raw);
        if (o.dequantized_file) fs.writeFileSync(o.dequantized_file, dequantizeBytes(raw, o.dtype, o.dims, quant.outputs[o.name] || null));
      });
      if (repeat > 1) runMs /= repeat;  // per run
      const opCounts = {};
      for (const o of ops) opCounts[o.op] = (opCounts[o.op] || 0) + 1;
      const quantization = {
        inputs: inputs.map((x) => quant.inputs[x.name] || null),
        outputs: outputs.map((x) => quant.outputs[x.name] || null),
      };
      return { ok: true, signature: key, inputs, outputs, quantization, ops, op_counts: opCounts, load_ms: loadMs, run_ms: runMs };
    } finally {
      for (const o of owned.reverse()) {
        try {
          o.delete();
        } catch {
          // already released by LiteRT
        }
      }
      if (modelPtr) w._free(modelPtr);
    }
  }
}

async function main() {
  const [jobsPath, resultsPath] = process.argv.slice(2);
  if (!jobsPath || !resultsPath) fail('usage: litert_run.mjs JOBS.json RESULTS.json');
  let jobs;
  try {
    jobs = JSON.parse(fs.readFileSync(jobsPath, 'utf8')).jobs;
  } catch (e) {
    fail(`cannot read job file ${jobsPath}: ${e.message}`);
  }
  if (!Array.isArray(jobs)) fail(`${jobsPath}: expected {"jobs": [...]}`);

  let log = [];
  const sink = (line) => log.push(String(line));
  const factory = loadFactory();
  let wasm;
  try {
    wasm = await factory({ print: sink, printErr: sink });
  } catch (e) {
    fail(`cannot instantiate LiteRT's wasm module: ${e.message}`);
  }
  const runner = new Runner(wasm);
  log = [];  // environment start-up chatter

  const results = {};
  const failures = [];
  for (const raw of jobs) {
    const job = normaliseJob(raw);
    log = [];
    let result;
    try {
      result = await runner.run(job);
    } catch (e) {
      result = { ok: false, error: String((e && e.message) || e).split('\n').slice(0, 5).join(' | ') };
    }
    const errors = log.filter((l) => /\bERROR\b/.test(l) || /failed to prepare/i.test(l));
    if (result.ok && errors.length) result = { ok: false, error: `LiteRT logged: ${errors.join(' | ')}` };
    result.log = log.filter((l) => !/^INFO: \[(environment|accelerator_registry|cpu_registry|gpu_registry)\.cc/.test(l));
    result.delegation = log.filter((l) => /delegate/i.test(l));
    results[job.id] = result;
    if (!result.ok) failures.push(`${job.id}: ${job.model}: ${result.error}`);
  }
  fs.writeFileSync(resultsPath, JSON.stringify({ litert_version: packageVersion(), results }, null, 1));
  if (failures.length) {
    for (const f of failures) process.stderr.write(`litert_run: error: ${f}\n`);
    process.stderr.write(`litert_run: ${failures.length} of ${jobs.length} jobs failed\n`);
    process.exit(1);
  }
}

main().catch((e) => fail(e.stack || String(e)));
