# modex's TFLite schema (schema.fbs) compiled with flatc into a header-only builder, reader and
# verifier for the io stage: <build>/generated/io/tflite/schema_generated.h, included as
# "io/tflite/schema_generated.h".
#
# Include from the top-level CMakeLists.txt after modex_library(modex_io ...):
#   include(src/io/tflite/tflite_schema.cmake)
# Needs Debian's flatbuffers-compiler (flatc) and libflatbuffers-dev (headers); the generated code
# uses only the headers, so nothing is linked.

find_package(FlatBuffers CONFIG REQUIRED)
if(TARGET flatbuffers::flatc)
  set(MODEX_FLATC flatbuffers::flatc)
else()
  find_program(MODEX_FLATC flatc)
  if(NOT MODEX_FLATC)
    message(FATAL_ERROR "flatc not found: apt-get install flatbuffers-compiler")
  endif()
endif()

set(MODEX_TFLITE_SCHEMA ${CMAKE_CURRENT_LIST_DIR}/schema.fbs)
set(MODEX_GENERATED_DIR ${CMAKE_BINARY_DIR}/generated)
set(MODEX_TFLITE_SCHEMA_HEADER ${MODEX_GENERATED_DIR}/io/tflite/schema_generated.h)

add_custom_command(
  OUTPUT ${MODEX_TFLITE_SCHEMA_HEADER}
  COMMAND ${MODEX_FLATC} --cpp --scoped-enums -o ${MODEX_GENERATED_DIR}/io/tflite ${MODEX_TFLITE_SCHEMA}
  DEPENDS ${MODEX_TFLITE_SCHEMA}
  COMMENT "flatc: generating the TFLite schema header"
  VERBATIM)
add_custom_target(modex_tflite_schema DEPENDS ${MODEX_TFLITE_SCHEMA_HEADER})
add_dependencies(modex_io modex_tflite_schema)
target_include_directories(modex_io PUBLIC ${MODEX_GENERATED_DIR})
