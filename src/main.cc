#include <malloc.h>

#include "app/cli.h"

int main(int argc, char** argv) {
  // Weights move from checkpoint buffers to output buffers tensor by tensor; with glibc's
  // adaptive threshold, freed multi-megabyte blocks stay in the heap and peak memory becomes the
  // sum of both copies. A fixed threshold serves large blocks from mmap, which munmap returns.
  mallopt(M_MMAP_THRESHOLD, 64 << 10);
  return modex::app::run_cli(argc, argv);
}
