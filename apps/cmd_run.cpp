// clv run: the service against any Kafka cluster (or the embedded broker when
// kafka.bootstrap_servers is empty).
#include <CLI/CLI.hpp>
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
    std::fprintf(stderr, "clv run: effective configuration %s\n", config::ToJson(config).c_str());
    const auto& stop = InstallStopSignals();
    std::unique_ptr<connectors::EmbeddedBroker> broker;
    if (!EnsureBroker(&config, &broker)) {
      *exit_code = 1;
      return;
    }
    std::unique_ptr<stream::Service> service;
    auto status = stream::Service::Create(config, &service);
    if (!status.ok()) {
      std::fprintf(stderr, "clv run: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    if (!*quiet) {
      service->set_progress_observer([](const stream::ServiceProgress& p) {
        std::fprintf(stderr,
                     "[%6.1fs] events %s (%s/s)  lag %s  users +%s  scores %s  dead-letter %s  "
                     "duplicates %s  partitions %d\n",
                     p.seconds, WithThousands(p.consumed).c_str(),
                     WithThousands(static_cast<int64_t>(p.events_per_second)).c_str(),
                     WithThousands(p.lag).c_str(), WithThousands(p.users).c_str(),
                     WithThousands(p.scores).c_str(), WithThousands(p.dead_lettered).c_str(),
                     WithThousands(p.duplicates).c_str(), p.partitions);
      });
    }
    status = service->Run(stop);
    if (!status.ok()) {
      std::fprintf(stderr, "clv run: stopped on error: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    auto p = service->progress();
    std::fprintf(stderr,
                 "clv run: stopped cleanly (state and offsets committed): consumed=%lld "
                 "processed=%lld dead_lettered=%lld duplicates=%lld scores=%lld alerts=%lld "
                 "timer_rescores=%lld\n",
                 static_cast<long long>(p.consumed), static_cast<long long>(p.processed),
                 static_cast<long long>(p.dead_lettered), static_cast<long long>(p.duplicates),
                 static_cast<long long>(p.scores), static_cast<long long>(p.alerts),
                 static_cast<long long>(p.timer_rescores));
    *exit_code = 0;
  });
}

}  // namespace clv::apps
