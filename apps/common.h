// Shared plumbing of the `clv` subcommands: loading config (file + CLV_*
// environment + --set overrides) with a clear error, signal handling, and
// starting the embedded broker when no bootstrap servers are configured.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "connectors/kafka.h"

namespace CLI {
class App;
}

namespace clv::apps {

struct ConfigFlags {
  std::string config_path;
  std::vector<std::string> overrides;
};
// Adds --config FILE and --set KEY=VALUE (repeatable) to a subcommand.
void AddConfigFlags(CLI::App& app, ConfigFlags& flags);
// Loads the config or prints the error (naming the key) and returns false.
bool LoadConfigOrReport(const ConfigFlags& flags, config::Config* config);

// Structured logs: every clv::Log line (common/log.h) goes to spdlog's default
// logger, logfmt on stderr (`ts=... level=info msg="..." key=value`), at
// config.log.level. Call once, early, before threads start.
void SetupLogging(const config::Config& config);
// One log line with the effective configuration (secrets masked).
void LogEffectiveConfig(const config::Config& config, const std::string& command);

// SIGINT/SIGTERM: the first sets the stop flag (finish the batch, commit,
// leave the group); the second exits at once with status 130 (the state is
// still consistent: the next start resumes from the stored offsets).
const std::atomic<bool>& InstallStopSignals();
bool StopRequested();

// Starts the embedded broker when config.kafka.bootstrap_servers is empty and
// writes its address into the config. Keeps the broker in *broker.
bool EnsureBroker(config::Config* config, std::unique_ptr<connectors::EmbeddedBroker>* broker);

// Kafka client options of config.kafka (connectors/kafka.h).
using connectors::ClientOptionsFrom;

// "1,234,567"
std::string WithThousands(int64_t value);
// Parses "2026-01-31", "2026-01-31T12:00:00Z" (common/time.h's ParseRfc3339:
// calendar-checked, 2026-02-31 is refused) or epoch ms (over 8 digits) into
// epoch ms (UTC).
bool ParseDateMs(const std::string& text, int64_t* ms);
// Parses "365d", "52w", "12h", or a plain number of days.
bool ParseDurationDays(const std::string& text, double* days);

}  // namespace clv::apps
