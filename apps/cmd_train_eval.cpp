// clv train / clv eval: see models/trainer.h and models/evaluate.h.
#include <CLI/CLI.hpp>

#include "apps/commands.h"
#include "apps/model_commands.h"

namespace clv::apps {

void AddTrainEvalCommands(CLI::App& root, int* exit_code) {
  (void)root;
  (void)exit_code;
}

}  // namespace clv::apps
