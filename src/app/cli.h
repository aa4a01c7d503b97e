#pragma once

namespace modex::app {
// Parses the command line, runs the command and returns the process exit code: 0 success,
// 1 a modex::Error (bad input, unsupported model, I/O), 2 usage errors.
int run_cli(int argc, char** argv);
}  // namespace modex::app
