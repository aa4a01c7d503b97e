// `modex serve MODEL [MODEL ...]`: an HTTP prediction server (see app/serve/server.h).
#pragma once

namespace CLI {
class App;
}

namespace modex::app {

void add_serve_command(CLI::App& app, int& exit_code);

}  // namespace modex::app
