// UNTESTED HERE (no Android toolchain on the development machines): how to feed a modex-exported
// .tflite on Android with the TFLite Interpreter, using the metadata modex embeds.
//
// build.gradle: implementation("org.tensorflow:tensorflow-lite:2.14.0")
//
// modex writes: input "image" float32 [1, H, W, 3] (NHWC), output "logits" [1, C]; a metadata
// entry "modex_metadata" (JSON) with class_names and preprocessing {input_size, resize
// ("resize" | "resize_center_crop"), resize_size, mean, std, scale}. `modex inspect model.tflite
// --json` prints the same; ship it next to the model as model.json if reading the flatbuffer
// metadata is inconvenient (the export's sidecar STEM.json holds it too).
import android.graphics.Bitmap
import org.json.JSONObject
import org.tensorflow.lite.Interpreter
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

class ModexClassifier(model: File, sidecar: File) {
    private val interpreter = Interpreter(model)
    private val meta = JSONObject(sidecar.readText())
    private val pre = meta.getJSONObject("preprocessing")
    private val size = pre.getInt("input_size")
    private val mean = FloatArray(3) { pre.getJSONArray("mean").getDouble(it).toFloat() }
    private val std = FloatArray(3) { pre.getJSONArray("std").getDouble(it).toFloat() }
    private val names = meta.getJSONArray("class_names").let { a -> List(a.length()) { a.getString(it) } }

    fun classify(photo: Bitmap): Pair<Int, Float> {
        val image = if (pre.getString("resize") == "resize") {
            Bitmap.createScaledBitmap(photo, size, size, true)
        } else {  // shorter side to resize_size, then the centre size x size
            val r = pre.getInt("resize_size").toFloat() / minOf(photo.width, photo.height)
            val s = Bitmap.createScaledBitmap(photo, (photo.width * r).toInt(), (photo.height * r).toInt(), true)
            Bitmap.createBitmap(s, (s.width - size) / 2, (s.height - size) / 2, size, size)
        }
        val input = ByteBuffer.allocateDirect(4 * size * size * 3).order(ByteOrder.nativeOrder())
        val pixels = IntArray(size * size).also { image.getPixels(it, 0, size, 0, 0, size, size) }
        for (p in pixels) {  // NHWC: R, G, B per pixel
            input.putFloat(((p shr 16 and 0xFF) / 255f - mean[0]) / std[0])
            input.putFloat(((p shr 8 and 0xFF) / 255f - mean[1]) / std[1])
            input.putFloat(((p and 0xFF) / 255f - mean[2]) / std[2])
        }
        val logits = Array(1) { FloatArray(names.size.coerceAtLeast(1)) }
        interpreter.run(input.rewind(), logits)
        val best = logits[0].indices.maxByOrNull { logits[0][it] }!!
        return best to logits[0][best]
    }
}
