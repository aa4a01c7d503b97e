// UNTESTED HERE (no Apple toolchain on the development machines): how to feed a modex-exported
// .tflite on iOS with TensorFlowLiteSwift, using modex's sidecar JSON (STEM.json, written by
// `modex export`; the same metadata is inside the .tflite as "modex_metadata").
//
// Podfile: pod 'TensorFlowLiteSwift'
//
// Input "image" float32 [1, H, W, 3] (NHWC, RGB, (x/255 - mean) / std); output "logits" [1, C].
import Foundation
import TensorFlowLite
import UIKit

struct ModexMetadata: Decodable {
    struct Preprocessing: Decodable {
        let input_size: Int
        let resize: String
        let resize_size: Int
        let mean: [Float]
        let std: [Float]
    }
    let class_names: [String]
    let preprocessing: Preprocessing
}

final class ModexClassifier {
    private let interpreter: Interpreter
    private let meta: ModexMetadata

    init(modelPath: String, sidecarPath: String) throws {
        interpreter = try Interpreter(modelPath: modelPath)
        try interpreter.allocateTensors()
        meta = try JSONDecoder().decode(ModexMetadata.self, from: Data(contentsOf: URL(fileURLWithPath: sidecarPath)))
    }

    /// `rgba`: the photo already resized (and centre-cropped when preprocessing.resize is
    /// "resize_center_crop") to input_size x input_size, 4 bytes per pixel.
    func classify(rgba: [UInt8]) throws -> (index: Int, name: String?, logit: Float) {
        let p = meta.preprocessing
        var input = [Float]()
        input.reserveCapacity(p.input_size * p.input_size * 3)
        for i in stride(from: 0, to: rgba.count, by: 4) {
            for c in 0..<3 { input.append((Float(rgba[i + c]) / 255 - p.mean[c]) / p.std[c]) }
        }
        try interpreter.copy(input.withUnsafeBufferPointer { Data(buffer: $0) }, toInputAt: 0)
        try interpreter.invoke()
        let out = try interpreter.output(at: 0)
        let logits = out.data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let best = logits.indices.max { logits[$0] < logits[$1] }!
        return (best, best < meta.class_names.count ? meta.class_names[best] : nil, logits[best])
    }
}
