// The flatc-generated accessors for modex's TFLite schema (schema.fbs, compiled at build time by
// tflite_schema.cmake), plus the mapping between TFLite tensor types and modex dtypes. For the
// TFLite writer, reader and their tests; everything else uses tflite_writer.h / tflite_reader.h.
#pragma once

#include <optional>

#include "core/dtype.h"
#include "io/tflite/schema_generated.h"

namespace modex::tflite_io {

// The TFLite type for a dtype, or nullopt for dtypes TFLite has no tensor type for.
std::optional<fb::TensorType> tensor_type_for(DType dtype);
// The dtype of a TFLite tensor type, or nullopt for types modex has no dtype for (STRING).
std::optional<DType> dtype_for(fb::TensorType type);

}  // namespace modex::tflite_io
