// clv: the clvstream executable. `clv --help` lists the subcommands;
// `clv SUBCOMMAND --help` their flags.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "apps/commands.h"
#include "apps/common.h"

namespace {

int Run(int argc, char** argv) {
  CLI::App app{"clvstream: live customer-lifetime-value scores from Kafka event streams"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "clv 0.1.0");
  int exit_code = 0;
  // Logs on stderr from the start (commands that load a config set its level).
  clv::apps::SetupLogging(clv::config::Config{});
  clv::apps::AddDemoCommand(app, &exit_code);
  clv::apps::AddRunCommand(app, &exit_code);
  clv::apps::AddBrokerCommand(app, &exit_code);
  clv::apps::AddGenCommand(app, &exit_code);
  clv::apps::AddReplayCommand(app, &exit_code);
  clv::apps::AddModelCommands(app, &exit_code);
  clv::apps::AddBenchCommand(app, &exit_code);
  clv::apps::AddInspectCommand(app, &exit_code);
  clv::apps::AddConfigCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  // What escapes is a bug or an unusable environment (e.g. out of memory), not
  // a user error: say so and exit 1 instead of std::terminate's abort.
  try {
    return Run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "clv: stopped by an unexpected error: %s\n", error.what());
  } catch (...) {
    std::fprintf(stderr, "clv: stopped by an unexpected error\n");
  }
  return 1;
}
