// Shared by the offline model subcommands (fit-baseline, train, eval).
#pragma once

#include <string>
#include <vector>

#include "apps/common.h"
#include "models/dataset.h"

namespace CLI {
class App;
}

namespace clv::apps {

struct EventFileFlags {
  ConfigFlags config;
  std::vector<std::string> files;
  std::string format = "auto";
  std::vector<std::string> columns;
};

void AddEventFileFlags(CLI::App& cmd, EventFileFlags& flags);
// Loads the files through the stream decoder, printing a summary to stderr.
bool LoadEvents(const EventFileFlags& flags, const config::Config& config, models::Dataset* data);

// clv train / clv eval (apps/cmd_train_eval.cpp).
void AddTrainEvalCommands(CLI::App& root, int* exit_code);

}  // namespace clv::apps
