// clvstream configuration.
//
// Contract: every option lives in one of the structs below; the member
// initializer IS the default and the comment above it is the documentation.
// The same options are registered once, by dotted key, in config.cpp's option
// table (name, description, default, validation); that table parses JSON,
// `CLV_*` environment variables and `--set key=value` flags, and generates
// docs/CONFIGURATION.md (`clv config --markdown`), so docs cannot drift.
//
// Precedence: defaults < JSON file < environment (CLV_STREAM_BATCH_MAX_EVENTS
// for `stream.batch_max_events`) < command-line overrides.
// Any unknown key or bad value makes Load() return an error naming the key.
//
// Thread-safety: a Config is a plain value; copy it freely.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace clv::config {

// Where events come from and where scores go.
struct KafkaOptions {
  // Comma-separated host:port list. Empty means "start the embedded broker
  // (librdkafka mock cluster) in this process".
  std::string bootstrap_servers = "";
  // Topics the service consumes (clickstream, orders, profiles, ...).
  std::vector<std::string> input_topics = {"clickstream", "orders", "profiles"};
  // Topic the scores are written to (key = user id).
  std::string scores_topic = "clv.scores";
  // Topic the alerts are written to (churn risk, stage changes, anomalies).
  std::string alerts_topic = "clv.alerts";
  // Topic malformed events go to, with the original bytes and a reason.
  std::string dead_letter_topic = "clv.dead-letter";
  // Consumer group of all instances of this service.
  std::string group_id = "clvstream";
  // Partitions of topics the embedded broker creates.
  int embedded_partitions = 8;
  // Extra librdkafka properties, passed through unchanged to consumer and
  // producer (JSON: "kafka": {"properties": {"security.protocol": "SASL_SSL"}};
  // env/flags: kafka.properties.security.protocol=SASL_SSL).
  std::map<std::string, std::string> properties = {};
};

// Field names of the input JSON / CSV columns, and names of event types.
struct MappingOptions {
  // Input field (JSON key or CSV column) holding the event id.
  std::string event_id_field = "event_id";
  // Input field holding the user id.
  std::string user_id_field = "user_id";
  // Input field holding the event type.
  std::string type_field = "type";
  // Input field holding the event time.
  std::string ts_field = "ts";
  // Input field holding the purchase/refund amount.
  std::string amount_field = "amount";
  // A negative purchase (or refund) amount is a refund of |amount|. False: a
  // negative amount is malformed (dead letter). A purchase of 0 is always a
  // purchase worth 0.
  bool negative_amount_is_refund = false;
  // Input field holding the currency code.
  std::string currency_field = "currency";
  // Input field holding the order id.
  std::string order_id_field = "order_id";
  // Input field holding the number of items.
  std::string items_field = "items";
  // Input field holding the product id.
  std::string product_id_field = "product_id";
  // Input field holding the product category.
  std::string category_field = "category";
  // Input field holding the session id.
  std::string session_id_field = "session_id";
  // Input field holding the user attributes of profile events.
  std::string attrs_field = "attrs";
  // "auto" (epoch s or ms by magnitude, or RFC 3339), "epoch_s", "epoch_ms",
  // "rfc3339", or a strftime pattern such as "%Y%m%d" (UTC).
  std::string ts_format = "auto";
  // Source type name -> canonical type (page_view, search, add_to_cart,
  // remove_from_cart, wishlist, ad_click, purchase, refund, profile).
  // Canonical names are always accepted as themselves.
  std::map<std::string, std::string> type_aliases = {};
  // When the input has no type field at all (e.g. an orders-only CSV), every
  // event gets this canonical type. Empty = type is required.
  std::string default_type = "";
  // CSV input (clv replay, clv train): column separator. "auto" (by file
  // extension: .csv ",", .tsv "tab", anything else "whitespace"), ",", "tab",
  // or "whitespace" (runs of spaces/tabs, leading ones ignored, as in CDNOW).
  std::string csv_delimiter = "auto";
  // CSV input: true when the first line is a header (it is skipped, and names
  // the columns unless csv_columns is set).
  bool csv_header = true;
  // CSV input: column names in order. Empty = take them from the header.
  std::vector<std::string> csv_columns = {};
};

// Validation limits (anything outside goes to the dead-letter topic).
struct ValidationOptions {
  // Largest accepted purchase/refund amount.
  double max_amount = 1e7;
  // Events more than this far ahead of the wall clock are rejected.
  int64_t max_future_ms = 24LL * 3600 * 1000;
  // Events before this epoch-ms are rejected (default 1990-01-01).
  int64_t min_ts_ms = 631152000000LL;
  // Largest accepted message, bytes.
  int64_t max_message_bytes = 1000000;
};

// The processing loop.
struct StreamOptions {
  // A micro-batch closes at this many events ...
  int batch_max_events = 10000;
  // ... or this long after its first event.
  int batch_max_wait_ms = 20;
  // 0: commit (state + offsets in one WriteBatch) after every micro-batch.
  // >0: commit at most this often; dirty states stay in the write-back cache.
  int commit_interval_ms = 0;
  // Commits whose outputs may still await the broker's acknowledgement while
  // the next micro-batch is processed. A commit is written only once every
  // score, alert and dead letter produced before it is acknowledged, in
  // order, so this changes speed, never what is committed. 0: wait for the
  // acknowledgements before reading more input.
  int commits_in_flight = 1;
  // "per_batch": one score per user per micro-batch (the last one);
  // "per_event": one score per event. Either way (user_id, seq) identifies
  // one deterministic score.
  std::string emit = "per_batch";
  // Event ids remembered per user for dedup (a fast in-memory check).
  int dedup_window = 64;
  // Every event id is also kept in RocksDB for this many days of event time
  // (behind the latest event of each input topic-partition), so a re-send is
  // caught however late it comes within that time; an event further behind
  // its topic-partition's latest event is dead-lettered. 0 keeps only the
  // per-user window.
  int dedup_retention_days = 30;
  // Users kept in the write-back cache.
  int cache_max_users = 200000;
  // Stop after this many input events (0 = run forever). For tests/bench.
  int64_t max_events = 0;
  // Stop when no event arrived for this long (0 = never). For replay jobs.
  int idle_exit_ms = 0;
};

// Lifecycle stages and alert thresholds (DESIGN.md "Lifecycle stages").
struct LifecycleOptions {
  // at_risk when quiet longer than this many times the user's own mean gap
  // between purchases ...
  double at_risk_gap_factor = 2.0;
  // ... (for users with one purchase, longer than this many days) ...
  double at_risk_default_days = 60;
  // ... or when churn_risk is above this.
  double at_risk_churn = 0.6;
  // dormant when quiet for this many days.
  double dormant_days = 180;
  // Alert when churn_risk crosses this upward.
  double churn_alert = 0.7;
  // Spend anomaly alert: order value above this quantile of the user's
  // predicted order-value distribution.
  double anomaly_quantile = 0.999;
  // Value segments: clv at or above this is "high_value" ...
  double high_value_clv = 500;
  // ... below this "low_value", in between "mid_value" (buyers only;
  // users who never bought are "prospect").
  double low_value_clv = 50;
};

struct StateOptions {
  // RocksDB directory.
  std::string dir = "./clv-state";
  // RocksDB block cache, bytes.
  int64_t block_cache_bytes = 256LL << 20;
  // Store LSTM (h, c) as fp16 (halves the bytes; scores still deterministic).
  bool fp16_hidden = true;
};

struct ModelOptions {
  // "baseline" (BG/NBD + Gamma-Gamma) or "lstm".
  std::string scorer = "baseline";
  // Model file. Empty = the model shipped in models/default/.
  std::string path = "";
  // "cpu", "cuda", or "auto" (cuda when available).
  std::string device = "cpu";
  // Horizon of the CLV prediction, days.
  double horizon_days = 365;
};

struct HttpOptions {
  // 0 disables the HTTP server.
  int port = 0;
  // Address the HTTP server listens on.
  std::string bind = "127.0.0.1";
  // Bearer token required on every request when set.
  std::string token = "";
};

struct LogOptions {
  // trace, debug, info, warn, error
  std::string level = "info";
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
