// The x86 intrinsics, for every kernel file to include first. GCC 12's AVX-512 intrinsics start
// from a deliberately uninitialised operand (_mm512_undefined_*), which -Wall reports at every
// inlined use as if it were the caller's; the warnings are silenced for the header alone.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
