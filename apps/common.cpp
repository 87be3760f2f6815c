#include "apps/common.h"

#include <unistd.h>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <ctime>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "common/log.h"
#include "common/time.h"

namespace clv::apps {

namespace {
std::atomic<bool> g_stop{false};
std::atomic<int> g_signals{0};

extern "C" void OnStopSignal(int) {
  if (g_signals.fetch_add(1) >= 1) {
    const char message[] = "\nclv: second signal, exiting now (state stays consistent)\n";
    ssize_t ignored = write(2, message, sizeof message - 1);
    (void)ignored;
    _exit(130);
  }
  g_stop.store(true);
}
}  // namespace

void AddConfigFlags(CLI::App& app, ConfigFlags& flags) {
  app.add_option("-c,--config", flags.config_path, "JSON config file (see docs/CONFIGURATION.md)");
  app.add_option("--set", flags.overrides, "Override one option: --set stream.emit=per_event")
      ->allow_extra_args(false);
}

bool LoadConfigOrReport(const ConfigFlags& flags, config::Config* config) {
  auto result = config::Load(flags.config_path, flags.overrides);
  if (!result.ok()) {
    std::fprintf(stderr, "clv: bad configuration: %s\n", result.error.c_str());
    return false;
  }
  *config = *result.config;
  return true;
}

void SetupLogging(const config::Config& config) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("clv", std::move(sink)));
  // logfmt: one event per line, easy for people and for log shippers.
  spdlog::set_pattern("ts=%Y-%m-%dT%H:%M:%S.%eZ level=%l %v", spdlog::pattern_time_type::utc);
  auto level = spdlog::level::from_str(config.log.level);
  if (config.log.level != "off" && level == spdlog::level::off) level = spdlog::level::info;
  spdlog::set_level(level);
  spdlog::flush_on(spdlog::level::trace);  // stderr, and tests read it after a SIGKILL
  // clv::Log (common/log.h) is the one logging call of every layer; here its
  // lines go to spdlog's logger, which adds ts= and level=.
  LogLevel clv_level = LogLevel::kInfo;
  if (!ParseLogLevel(config.log.level, &clv_level)) clv_level = LogLevel::kInfo;
  SetLogLevel(clv_level);
  SetLogSink([](LogLevel line_level, std::string_view line) {
    spdlog::level::level_enum to = spdlog::level::info;
    switch (line_level) {
      case LogLevel::kTrace: to = spdlog::level::trace; break;
      case LogLevel::kDebug: to = spdlog::level::debug; break;
      case LogLevel::kInfo: to = spdlog::level::info; break;
      case LogLevel::kWarn: to = spdlog::level::warn; break;
      case LogLevel::kError: to = spdlog::level::err; break;
      case LogLevel::kOff: return;
    }
    spdlog::log(to, "{}", line);
  });
}

void LogEffectiveConfig(const config::Config& config, const std::string& command) {
  // ToJson masks the secrets; compact it to one line.
  auto json = nlohmann::json::parse(config::ToJson(config), nullptr, false);
  std::string text = json.is_discarded() ? config::ToJson(config) : json.dump();
  Log(LogLevel::kInfo, "effective configuration",
      {{"command", command}, {"log_level", config.log.level}, {"config", text}});
}

const std::atomic<bool>& InstallStopSignals() {
  std::signal(SIGINT, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);
  return g_stop;
}

bool StopRequested() { return g_stop.load(); }

bool EnsureBroker(config::Config* config, std::unique_ptr<connectors::EmbeddedBroker>* broker) {
  if (!config->kafka.bootstrap_servers.empty()) return true;
  auto status = connectors::EmbeddedBroker::Start(1, config->kafka.embedded_partitions, broker);
  if (!status.ok()) {
    std::fprintf(stderr, "clv: could not start the embedded broker: %s\n", status.message.c_str());
    return false;
  }
  config->kafka.bootstrap_servers = (*broker)->bootstrap_servers();
  for (const auto& topic : config->kafka.input_topics) {
    status = (*broker)->CreateTopic(topic, config->kafka.embedded_partitions);
    if (!status.ok()) {
      std::fprintf(stderr, "clv: embedded broker: %s\n", status.message.c_str());
      return false;
    }
  }
  std::fprintf(stderr, "clv: embedded Kafka broker (librdkafka mock cluster) at %s\n",
               config->kafka.bootstrap_servers.c_str());
  return true;
}

std::string WithThousands(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

bool ParseDateMs(const std::string& text, int64_t* ms) {
  const bool digits_only =
      !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  if (digits_only && text.size() > 8) {
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *ms);
    return error == std::errc() && end == text.data() + text.size();
  }
  std::string why;
  return ParseRfc3339(text, ms, &why);
}

bool ParseDurationDays(const std::string& text, double* days) {
  if (text.empty()) return false;
  char unit = text.back();
  std::string number =
      std::isdigit(static_cast<unsigned char>(unit)) ? text : text.substr(0, text.size() - 1);
  char* end = nullptr;
  double value = std::strtod(number.c_str(), &end);
  if (end == number.c_str() || *end != '\0' || !(value > 0)) return false;
  switch (unit) {
    case 'd': *days = value; return true;
    case 'w': *days = value * 7; return true;
    case 'h': *days = value / 24; return true;
    default:
      if (std::isdigit(static_cast<unsigned char>(unit))) {
        *days = value;
        return true;
      }
      return false;
  }
}

}  // namespace clv::apps
