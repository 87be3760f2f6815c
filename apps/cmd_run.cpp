// clv run: the service against any Kafka cluster (or the embedded broker when
// kafka.bootstrap_servers is empty).
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "apps/commands.h"
#include "apps/common.h"
#include "stream/service.h"

namespace clv::apps {

void AddRunCommand(CLI::App& root, int* exit_code) {
  auto* cmd = root.add_subcommand("run", "Run the service: consume events, keep state, publish scores");
  auto flags = std::make_shared<ConfigFlags>();
  auto quiet = std::make_shared<bool>(false);
  AddConfigFlags(*cmd, *flags);
  cmd->add_flag("-q,--quiet", *quiet, "No progress lines");
  cmd->callback([flags, quiet, exit_code] {
    config::Config config;
    if (!LoadConfigOrReport(*flags, &config)) {
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
    auto status = stream::Service::Create(config, &service);
    if (!status.ok()) {
      spdlog::error("msg=\"clv run: could not start\" error=\"{}\"", status.message);
      *exit_code = 1;
      return;
    }
    if (!*quiet) {
      service->set_progress_observer([](const stream::ServiceProgress& p) {
        spdlog::info("msg=progress seconds={:.1f} events={} events_per_second={:.0f} lag={} "
                     "new_users={} scores={} dead_lettered={} duplicates={} partitions={}",
                     p.seconds, p.consumed, p.events_per_second, p.lag, p.users, p.scores,
                     p.dead_lettered, p.duplicates, p.partitions);
      });
    }
    status = service->Run(stop);
    if (!status.ok()) {
      spdlog::error("msg=\"clv run: stopped on error\" error=\"{}\"", status.message);
      *exit_code = 1;
      return;
    }
    auto p = service->progress();
    // The e2e tests read the counters of this line.
    spdlog::info("msg=\"clv run: stopped cleanly (state and offsets committed)\" consumed={} "
                 "processed={} dead_lettered={} duplicates={} scores={} alerts={} "
                 "timer_rescores={} ",
                 p.consumed, p.processed, p.dead_lettered, p.duplicates, p.scores, p.alerts,
                 p.timer_rescores);
    *exit_code = 0;
  });
}

}  // namespace clv::apps
