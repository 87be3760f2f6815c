// clv run: the service against any Kafka cluster (or the embedded broker when
// kafka.bootstrap_servers is empty).
#include <cmath>

#include <CLI/CLI.hpp>

#include "apps/commands.h"
#include "apps/common.h"
#include "common/log.h"
#include "stream/service.h"

namespace clv::apps {

void AddRunCommand(CLI::App& root, int* exit_code) {
  auto* cmd =
      root.add_subcommand("run", "Run the service: consume events, keep state, publish scores");
  auto flags = std::make_shared<ConfigFlags>();
  auto quiet = std::make_shared<bool>(false);
  auto reset_offsets = std::make_shared<std::string>();
  AddConfigFlags(*cmd, *flags);
  cmd->add_flag("-q,--quiet", *quiet, "No progress lines");
  cmd->add_option("--reset-offsets", *reset_offsets,
                  "For this start: read input partitions whose stored offset is not in the log "
                  "(topic or cluster recreated, retention) from their log start (earliest) or "
                  "end (latest); events already counted stay in the state. Same as --set "
                  "kafka.reset_offsets=...")
      ->check(CLI::IsMember({"earliest", "latest"}));
  cmd->callback([flags, quiet, reset_offsets, exit_code] {
    config::Config config;
    ConfigFlags effective = *flags;
    if (!reset_offsets->empty()) {
      effective.overrides.push_back("kafka.reset_offsets=" + *reset_offsets);
    }
    if (!LoadConfigOrReport(effective, &config)) {
      *exit_code = 2;
      return;
    }
    SetupLogging(config);
    LogEffectiveConfig(config, "run");
    const auto& stop = InstallStopSignals();
    std::unique_ptr<connectors::EmbeddedBroker> broker;
    if (!EnsureBroker(&config, &broker)) {
      *exit_code = 1;
      return;
    }
    std::unique_ptr<stream::Service> service;
    auto status = stream::Service::Create(config, &service, &stop);
    if (!status.ok()) {
      Log(LogLevel::kError, "clv run: could not start", {{"error", status.message}});
      *exit_code = 1;
      return;
    }
    if (!*quiet) {
      service->set_progress_observer([](const stream::ServiceProgress& p) {
        Log(LogLevel::kInfo, "progress",
            {{"seconds", p.seconds},
             {"events", p.consumed},
             {"events_per_second", static_cast<int64_t>(std::llround(p.events_per_second))},
             {"lag", p.lag},
             {"new_users", p.users},
             {"scores", p.scores},
             {"dead_lettered", p.dead_lettered},
             {"duplicates", p.duplicates},
             {"partitions", p.partitions}});
      });
    }
    status = service->Run(stop);
    if (!status.ok()) {
      Log(LogLevel::kError, "clv run: stopped on error", {{"error", status.message}});
      *exit_code = 1;
      return;
    }
    auto p = service->progress();
    // The e2e tests read the counters of this line.
    Log(LogLevel::kInfo, "clv run: stopped cleanly (state and offsets committed)",
        {{"consumed", p.consumed},
         {"processed", p.processed},
         {"dead_lettered", p.dead_lettered},
         {"duplicates", p.duplicates},
         {"scores", p.scores},
         {"alerts", p.alerts},
         {"timer_rescores", p.timer_rescores}});
    *exit_code = 0;
  });
}

}  // namespace clv::apps
