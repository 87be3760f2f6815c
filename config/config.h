// clvstream configuration.
//
// Contract: every option lives in one of the structs below, and its member
// initializer IS the default. What each option means, its unit and what it
// accepts are written once, in the option table of config.cpp (`OptionTable()`:
// dotted key, description, validation), which also parses JSON, `CLV_*`
// environment variables and `--set key=value` flags and generates
// docs/CONFIGURATION.md (`clv config --markdown`): read the description there.
// tests/config_test.cpp fails when a member below has no row in the table.
//
// Precedence: defaults < JSON file < environment (CLV_STREAM_BATCH_MAX_EVENTS
// for `stream.batch_max_events`) < command-line overrides.
// Any unknown key or bad value makes Load() return an error naming the key.
//
// Thread-safety: a Config is a plain value; copy and compare it freely.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace clv::config {

// `kafka.*`
struct KafkaOptions {
  std::string bootstrap_servers = "";
  std::vector<std::string> input_topics = {"clickstream", "orders", "profiles"};
  std::string scores_topic = "clv.scores";
  std::string alerts_topic = "clv.alerts";
  std::string dead_letter_topic = "clv.dead-letter";
  std::string group_id = "clvstream";
  int embedded_partitions = 8;
  int64_t producer_message_max_bytes = 1000000;
  int startup_timeout_ms = 30000;
  std::string reset_offsets = "none";
  std::map<std::string, std::string> properties = {};

  bool operator==(const KafkaOptions&) const = default;
};

// `mapping.*`
struct MappingOptions {
  std::string event_id_field = "event_id";
  std::string user_id_field = "user_id";
  std::string type_field = "type";
  std::string ts_field = "ts";
  std::string amount_field = "amount";
  bool negative_amount_is_refund = false;
  std::string currency_field = "currency";
  std::string order_id_field = "order_id";
  std::string items_field = "items";
  std::string product_id_field = "product_id";
  std::string category_field = "category";
  std::string session_id_field = "session_id";
  std::string attrs_field = "attrs";
  std::string ts_format = "auto";
  std::map<std::string, std::string> type_aliases = {};
  std::string default_type = "";
  std::string csv_delimiter = "auto";
  bool csv_header = true;
  std::vector<std::string> csv_columns = {};

  bool operator==(const MappingOptions&) const = default;
};

// `validation.*`
struct ValidationOptions {
  double max_amount = 1e9;
  int64_t max_future_ms = 24LL * 3600 * 1000;
  int64_t min_ts_ms = 631152000000LL;
  int64_t max_message_bytes = 1000000;

  bool operator==(const ValidationOptions&) const = default;
};

// `stream.*`
struct StreamOptions {
  int batch_max_events = 10000;
  int batch_max_wait_ms = 2;
  int commit_interval_ms = 0;
  int commits_in_flight = 1;
  // 0: the machine's core count (std::thread::hardware_concurrency).
  int threads = 0;
  std::string emit = "per_batch";
  int dedup_window = 64;
  int dedup_retention_days = 30;
  int cache_max_users = 200000;
  int64_t max_events = 0;
  int idle_exit_ms = 0;
  int shutdown_timeout_ms = 10000;

  bool operator==(const StreamOptions&) const = default;
};

// `lifecycle.*`
struct LifecycleOptions {
  double at_risk_gap_factor = 2.0;
  double at_risk_default_days = 60;
  double at_risk_churn = 0.6;
  double dormant_days = 180;
  double churn_alert = 0.7;
  double anomaly_quantile = 0.999;
  double high_value_clv = 500;
  double low_value_clv = 50;

  bool operator==(const LifecycleOptions&) const = default;
};

// `state.*`
struct StateOptions {
  std::string dir = "./clv-state";
  int64_t block_cache_bytes = 256LL << 20;
  bool fp16_hidden = true;
  bool changelog = true;
  // Empty: "<kafka.group_id>-state-changelog".
  std::string changelog_topic = "";

  bool operator==(const StateOptions&) const = default;
};

// `model.*`
struct ModelOptions {
  std::string scorer = "lstm";
  std::string path = "";
  // BG/NBD + Gamma-Gamma file a portable LSTM takes its prior from (the
  // shipped LSTM is one); empty = the shipped baseline (models/default/).
  std::string baseline_path = "";
  std::string device = "cpu";
  double horizon_days = 365;

  bool operator==(const ModelOptions&) const = default;
};

// `http.*`
struct HttpOptions {
  int port = 0;
  std::string bind = "127.0.0.1";
  std::string token = "";
  int threads = 4;
  int max_connections = 512;
  int read_timeout_ms = 2000;
  int write_timeout_ms = 2000;
  int keep_alive_timeout_ms = 5000;
  int keep_alive_max_requests = 100;
  // Where other instances of the group send a client for this instance's
  // users; empty: not announced (stream/owner_directory.h).
  std::string advertised_url = "";

  bool operator==(const HttpOptions&) const = default;
};

// `log.*`
struct LogOptions {
  std::string level = "info";

  bool operator==(const LogOptions&) const = default;
};

struct Config {
  KafkaOptions kafka;
  MappingOptions mapping;
  ValidationOptions validation;
  StreamOptions stream;
  LifecycleOptions lifecycle;
  StateOptions state;
  ModelOptions model;
  HttpOptions http;
  LogOptions log;

  bool operator==(const Config&) const = default;
};

// Result of loading: either a Config or an error message that names the key
// (and the file/variable it came from).
struct LoadResult {
  std::optional<Config> config;
  std::string error;
  bool ok() const { return config.has_value(); }
};

// Builds a Config from defaults, then `json_path` (may be empty), then the
// process environment (CLV_*), then `overrides` ("key=value", dotted keys).
LoadResult Load(const std::string& json_path, const std::vector<std::string>& overrides);
// Same, with an explicit environment (for tests).
LoadResult Load(const std::string& json_path, const std::vector<std::string>& overrides,
                const std::map<std::string, std::string>& environment);

// Validates cross-field rules (also called by Load). Empty string = fine.
std::string Validate(const Config& config);

// The effective configuration as JSON, secrets (token, sasl/ssl passwords) masked.
std::string ToJson(const Config& config, bool mask_secrets = true);

// docs/CONFIGURATION.md, generated from the option table.
std::string MarkdownTable();

}  // namespace clv::config
