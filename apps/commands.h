// Each `clv` subcommand registers itself on the root CLI11 app; its callback
// runs the command and stores the process exit status in *exit_code.
#pragma once

namespace CLI {
class App;
}

namespace clv::apps {

void AddRunCommand(CLI::App& root, int* exit_code);
void AddDemoCommand(CLI::App& root, int* exit_code);
void AddBrokerCommand(CLI::App& root, int* exit_code);
void AddGenCommand(CLI::App& root, int* exit_code);
void AddReplayCommand(CLI::App& root, int* exit_code);
void AddModelCommands(CLI::App& root, int* exit_code);  // fit-baseline, train, eval
void AddBenchCommand(CLI::App& root, int* exit_code);
void AddInspectCommand(CLI::App& root, int* exit_code);
void AddConfigCommand(CLI::App& root, int* exit_code);

}  // namespace clv::apps
