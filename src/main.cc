#include "app/cli.h"

int main(int argc, char** argv) { return modex::app::run_cli(argc, argv); }
