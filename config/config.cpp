// The option table and everything driven by it: JSON / environment / flag
// parsing, validation, the effective-config dump and docs/CONFIGURATION.md.
//
// To add an option: add the member (initializer = default, no comment) to
// config.h, then one entry to OptionTable() below (its description is the
// option's only documentation), then regenerate the docs with
// scripts/gen-config-docs.sh. tests/config_test.cpp fails until all three
// agree: a member without a row, a row whose key or CLV_* name does not match
// the member, or stale docs.
#include "config/config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

extern char** environ;

namespace clv::config {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;
using StringList = std::vector<std::string>;
using StringMap = std::map<std::string, std::string>;

// A typed pointer to one option's member inside a Config.
using ValueRef =
    std::variant<std::string*, int*, int64_t*, double*, bool*, StringList*, StringMap*>;

template <auto kSection, auto kMember>
ValueRef MemberOf(Config& config) {
  return &((config.*kSection).*kMember);
}

// Extra rule for one option; returns what is wrong ("" = fine). It may look
// at other options (cross-field rules).
using CheckFunction = std::string (*)(const Config&);

struct Section {
  std::string_view name;
  std::string_view description;
};

struct Option {
  // Dotted key: "<section>.<name>".
  std::string_view key;
  ValueRef (*access)(Config&);
  // What the option means, its unit and its effect: the only copy (config.h
  // has none), shown in docs/CONFIGURATION.md.
  std::string_view description;
  // Numeric range (int, int64, double), inclusive unless min_exclusive.
  std::optional<double> min = std::nullopt;
  std::optional<double> max = std::nullopt;
  bool min_exclusive = false;
  // Enumerated string values.
  std::vector<std::string_view> choices = {};
  // Strings and lists: must not be empty.
  bool non_empty = false;
  // Anything else, and what it allows (for the docs).
  CheckFunction check = nullptr;
  std::string_view check_doc = "";
  // Value masked in ToJson().
  bool secret = false;
};

constexpr std::string_view kCanonicalTypes[] = {"page_view",        "search",   "add_to_cart",
                                                "remove_from_cart", "wishlist", "ad_click",
                                                "purchase",         "refund",   "profile"};

// Environment variables that start with CLV_ but are not options.
// Environment variables that start with CLV_ but are not options: the config
// file, and what tests, scripts, benchmarks and the CMake options use.
constexpr std::string_view kEnvironmentAllowList[] = {
    "CLV_CONFIG",   "CLV_SOURCE_DIR", "CLV_BINARY", "CLV_REAL_KAFKA", "CLV_KAFKA_HOME",
    "CLV_DATA_DIR", "CLV_SANITIZE",   "CLV_FUZZ",   "CLV_MODELS_ONLY"};
constexpr std::string_view kEnvironmentAllowPrefixes[] = {"CLV_TEST_", "CLV_BENCH_", "CLV_BUILD_",
                                                          "CLV_REAL_KAFKA_"};

// Keys of kafka.properties that have an option of their own.
constexpr std::pair<std::string_view, std::string_view> kReservedKafkaProperties[] = {
    {"bootstrap.servers", "kafka.bootstrap_servers"},
    {"metadata.broker.list", "kafka.bootstrap_servers"},
    {"group.id", "kafka.group_id"},
    {"message.max.bytes", "kafka.producer_message_max_bytes"},
    {"auto.offset.reset", "kafka.reset_offsets"},
};

std::string Quote(std::string_view text) { return Json(std::string(text)).dump(); }

std::string Join(const auto& items, std::string_view separator = ", ") {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += std::string(item);
  }
  return out;
}

bool IsCanonicalType(std::string_view name) {
  return std::find(std::begin(kCanonicalTypes), std::end(kCanonicalTypes), name) !=
         std::end(kCanonicalTypes);
}

// Kafka's own rule: 1..249 characters of [A-Za-z0-9._-], not "." or "..".
std::string TopicNameProblem(const std::string& topic) {
  if (topic.empty()) return "topic name is empty";
  if (topic.size() > 249) return "topic name is longer than 249 characters";
  if (topic == "." || topic == "..") return "topic name cannot be '.' or '..'";
  for (char c : topic) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return "topic " + Quote(topic) + " has a character other than letters, digits, '.', '_', '-'";
    }
  }
  return "";
}

std::string CheckTopic(const std::string& topic, const Config& config, std::string_view self) {
  if (auto problem = TopicNameProblem(topic); !problem.empty()) return problem;
  const auto& inputs = config.kafka.input_topics;
  if (std::find(inputs.begin(), inputs.end(), topic) != inputs.end()) {
    return "must differ from every kafka.input_topics entry (the service would read its own "
           "output)";
  }
  const std::pair<std::string_view, const std::string*> outputs[] = {
      {"kafka.scores_topic", &config.kafka.scores_topic},
      {"kafka.alerts_topic", &config.kafka.alerts_topic},
      {"kafka.dead_letter_topic", &config.kafka.dead_letter_topic}};
  for (const auto& [key, value] : outputs) {
    if (key != self && *value == topic) return "must differ from " + std::string(key);
  }
  return "";
}

std::string CheckInputTopics(const Config& config) {
  std::set<std::string> seen;
  for (const auto& topic : config.kafka.input_topics) {
    if (auto problem = TopicNameProblem(topic); !problem.empty()) return problem;
    if (!seen.insert(topic).second) return "topic " + Quote(topic) + " is listed twice";
  }
  return "";
}

// One bootstrap entry: [protocol://]host[:port], host a name, an IPv4
// address or a bracketed IPv6 address ([::1]:9092); the port, when given, a
// number 1..65535 (librdkafka's default is 9092). A bare IPv6 address
// (several colons, no brackets) is taken as a host without a port.
std::string BootstrapEntryProblem(std::string entry) {
  const auto first = entry.find_first_not_of(" \t");
  if (first == std::string::npos) return "has an empty host:port entry";
  entry = entry.substr(first, entry.find_last_not_of(" \t") - first + 1);
  const std::string shown = Quote(entry);
  if (auto scheme = entry.find("://"); scheme != std::string::npos)
    entry = entry.substr(scheme + 3);
  std::string host = entry;
  std::string port;
  if (!entry.empty() && entry.front() == '[') {
    const auto close = entry.find(']');
    if (close == std::string::npos) return "entry " + shown + ": '[' without ']'";
    host = entry.substr(1, close - 1);
    const std::string rest = entry.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return "entry " + shown + ": expected ':port' after ']'";
      port = rest.substr(1);
      if (port.empty()) return "entry " + shown + ": the port after ':' is empty";
    }
  } else if (std::count(entry.begin(), entry.end(), ':') == 1) {
    const auto colon = entry.find(':');
    host = entry.substr(0, colon);
    port = entry.substr(colon + 1);
    if (port.empty()) return "entry " + shown + ": the port after ':' is empty";
  }
  if (host.empty()) return "entry " + shown + ": the host is empty";
  if (host.find_first_of(" \t") != std::string::npos) {
    return "entry " + shown + ": the host contains a space";
  }
  if (!port.empty()) {
    const bool digits =
        port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos;
    const int number = digits ? std::stoi(port) : 0;
    if (number < 1 || number > 65535) {
      return "entry " + shown + ": port " + Quote(port) + " is not a number from 1 to 65535";
    }
  }
  return "";
}

std::string CheckBootstrapServers(const Config& config) {
  const std::string& servers = config.kafka.bootstrap_servers;
  if (servers.empty()) return "";
  std::stringstream stream(servers);
  std::string entry;
  size_t count = 0;
  while (std::getline(stream, entry, ',')) {
    ++count;
    if (auto problem = BootstrapEntryProblem(entry); !problem.empty()) return problem;
  }
  if (count == 0 || servers.back() == ',') return "has an empty host:port entry";
  return "";
}

std::string CheckKafkaProperties(const Config& config) {
  for (const auto& [name, value] : config.kafka.properties) {
    if (name.empty()) return "has an empty property name";
    for (const auto& [reserved, option] : kReservedKafkaProperties) {
      if (name == reserved) {
        return "property " + Quote(name) + " is set through option '" + std::string(option) +
               "' instead";
      }
    }
  }
  return "";
}

// The conversions the stream decoder implements (stream/decoder.cpp); the
// pattern must fix the date (a year, %F, or %s).
std::string CheckTsFormat(const Config& config) {
  const std::string& format = config.mapping.ts_format;
  if (format == "auto" || format == "epoch_s" || format == "epoch_ms" || format == "rfc3339") {
    return "";
  }
  if (format.find('%') == std::string::npos) {
    return "must be auto, epoch_s, epoch_ms, rfc3339 or a strftime pattern such as \"%Y%m%d\"";
  }
  constexpr std::string_view kConversions = "YmdeHMSzyFTs%";
  constexpr std::string_view kDateConversions = "YyFs";
  bool has_date = false;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') continue;
    if (i + 1 >= format.size() || kConversions.find(format[i + 1]) == std::string_view::npos) {
      return "'" + format.substr(i, 2) +
             "' is not a supported conversion (%Y %m %d %e %H %M %S %z %y %F %T %s %%)";
    }
    if (kDateConversions.find(format[i + 1]) != std::string_view::npos) has_date = true;
    ++i;
  }
  if (!has_date) return "pattern has no year (%Y, %y, %F) or epoch (%s) conversion";
  return "";
}

std::string CheckTypeAliases(const Config& config) {
  for (const auto& [alias, target] : config.mapping.type_aliases) {
    if (alias.empty()) return "has an empty source type name";
    if (!IsCanonicalType(target)) {
      return "alias " + Quote(alias) + " -> " + Quote(target) + ": target must be one of " +
             Join(kCanonicalTypes);
    }
  }
  return "";
}

std::string CheckDefaultType(const Config& config) {
  const std::string& type = config.mapping.default_type;
  if (type.empty() || IsCanonicalType(type)) return "";
  return "must be empty or one of " + Join(kCanonicalTypes);
}

std::string CheckCsvColumns(const Config& config) {
  std::set<std::string> seen;
  for (const auto& column : config.mapping.csv_columns) {
    if (column.empty()) return "has an empty column name";
    if (!seen.insert(column).second) return "column " + Quote(column) + " is listed twice";
  }
  return "";
}

std::string CheckDormantDays(const Config& config) {
  if (config.lifecycle.dormant_days <= config.lifecycle.at_risk_default_days) {
    return "must be greater than lifecycle.at_risk_default_days (a user turns at_risk before "
           "dormant)";
  }
  return "";
}

std::string CheckLowValueClv(const Config& config) {
  if (config.lifecycle.low_value_clv > config.lifecycle.high_value_clv) {
    return "must be at most lifecycle.high_value_clv (a low_value buyer is not above high_value)";
  }
  return "";
}

const std::vector<Section>& Sections() {
  static const std::vector<Section> sections = {
      {"kafka", "Where events come from and where scores go."},
      {"mapping",
       "Field names of the input JSON / CSV columns, and names of event types. The same mapping "
       "serves the Kafka input and `clv replay` of files."},
      {"validation", "Validation limits (anything outside goes to the dead-letter topic)."},
      {"stream", "The processing loop."},
      {"lifecycle", "Lifecycle stages and alert thresholds (DESIGN.md \"Lifecycle stages\")."},
      {"state", "The RocksDB state store."},
      {"model", "The scorer."},
      {"http", "The HTTP server (`/users/{id}`, `/top`, `/metrics`, `/healthz`, `/readyz`)."},
      {"log", "Logging."},
  };
  return sections;
}

// The one table. Order = order in the docs and in ToJson().
const std::vector<Option>& OptionTable() {
  static const std::vector<Option> table = {
      // kafka
      {.key = "kafka.bootstrap_servers",
       .access = MemberOf<&Config::kafka, &KafkaOptions::bootstrap_servers>,
       .description = "Comma-separated host:port list. Empty means \"start the embedded broker "
                      "(librdkafka mock cluster) in this process\".",
       .check = CheckBootstrapServers,
       .check_doc =
           "empty, or host:port entries separated by commas (port 1-65535; "
           "`[v6addr]:port`, `PROTOCOL://` prefixes and a host alone, port 9092, accepted)"},
      {.key = "kafka.input_topics",
       .access = MemberOf<&Config::kafka, &KafkaOptions::input_topics>,
       .description = "Topics the service consumes (clickstream, orders, profiles, ...).",
       .non_empty = true,
       .check = CheckInputTopics,
       .check_doc = "distinct valid topic names"},
      {.key = "kafka.scores_topic",
       .access = MemberOf<&Config::kafka, &KafkaOptions::scores_topic>,
       .description = "Topic the scores are written to (key = user id).",
       .check =
           [](const Config& c) {
             return CheckTopic(c.kafka.scores_topic, c, "kafka.scores_topic");
           },
       .check_doc =
           "a valid topic name, not an input topic, distinct from the other output topics"},
      {.key = "kafka.alerts_topic",
       .access = MemberOf<&Config::kafka, &KafkaOptions::alerts_topic>,
       .description = "Topic the alerts are written to (churn risk, stage changes, anomalies).",
       .check =
           [](const Config& c) {
             return CheckTopic(c.kafka.alerts_topic, c, "kafka.alerts_topic");
           },
       .check_doc =
           "a valid topic name, not an input topic, distinct from the other output topics"},
      {.key = "kafka.dead_letter_topic",
       .access = MemberOf<&Config::kafka, &KafkaOptions::dead_letter_topic>,
       .description = "Topic malformed events go to, with the original bytes and a reason.",
       .check =
           [](const Config& c) {
             return CheckTopic(c.kafka.dead_letter_topic, c, "kafka.dead_letter_topic");
           },
       .check_doc =
           "a valid topic name, not an input topic, distinct from the other output topics"},
      {.key = "kafka.group_id",
       .access = MemberOf<&Config::kafka, &KafkaOptions::group_id>,
       .description = "Consumer group of all instances of this service.",
       .non_empty = true},
      {.key = "kafka.embedded_partitions",
       .access = MemberOf<&Config::kafka, &KafkaOptions::embedded_partitions>,
       .description = "Partitions of topics the embedded broker creates.",
       .min = 1,
       .max = 10000},
      {.key = "kafka.producer_message_max_bytes",
       .access = MemberOf<&Config::kafka, &KafkaOptions::producer_message_max_bytes>,
       .description = "Largest record the service produces (librdkafka message.max.bytes of "
                      "its producer; keep it at most the brokers' message.max.bytes). A dead "
                      "letter whose original would not fit is truncated to fit, with headers "
                      "giving the original size and hash (README.md, Semantics).",
       .min = 16384,
       .max = 1000000000},
      {.key = "kafka.startup_timeout_ms",
       .access = MemberOf<&Config::kafka, &KafkaOptions::startup_timeout_ms>,
       .description = "How long the start waits for a broker at kafka.bootstrap_servers to "
                      "answer; then it stops with an error naming them. The HTTP server is "
                      "already up meanwhile (/healthz answers, /readyz says what it waits for).",
       .min = 100,
       .max = 86400000},
      {.key = "kafka.reset_offsets",
       .access = MemberOf<&Config::kafka, &KafkaOptions::reset_offsets>,
       .description =
           "What a start does with an input partition whose position is not in its log: a "
           "stored offset past the log end (the topic or the cluster was recreated) or before "
           "the log start (retention, or the embedded broker's 5 MiB per partition, deleted "
           "events before they were read), or a partition this state never read whose log "
           "does not start at 0. \"none\": stop, naming the partition, the stored offset and "
           "the log start and end. \"earliest\" / \"latest\": read such a partition from "
           "its log start / end, store that as its offset and log what was given up; events "
           "already counted stay in the state. Only positions checked when a partition is "
           "assigned move; a position that leaves the log while it is read always stops the "
           "service. Meant for one start (`clv run --reset-offsets earliest`), not for a "
           "config file (docs/KAFKA.md, \"Start positions that are not in the log\").",
       .choices = {"none", "earliest", "latest"}},
      {.key = "kafka.properties",
       .access = MemberOf<&Config::kafka, &KafkaOptions::properties>,
       .description = "Extra librdkafka properties, passed through unchanged to consumer and "
                      "producer (JSON: `\"kafka\": {\"properties\": {\"security.protocol\": "
                      "\"SASL_SSL\"}}`; flags: `kafka.properties.security.protocol=SASL_SSL`).",
       .check = CheckKafkaProperties,
       .check_doc = "not bootstrap.servers, group.id, message.max.bytes or auto.offset.reset "
                    "(they have options)"},
      // mapping
      {.key = "mapping.event_id_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::event_id_field>,
       .description = "Input field (JSON key or CSV column) holding the event id.",
       .non_empty = true},
      {.key = "mapping.user_id_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::user_id_field>,
       .description = "Input field holding the user id.",
       .non_empty = true},
      {.key = "mapping.type_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::type_field>,
       .description = "Input field holding the event type.",
       .non_empty = true},
      {.key = "mapping.ts_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::ts_field>,
       .description = "Input field holding the event time.",
       .non_empty = true},
      {.key = "mapping.amount_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::amount_field>,
       .description = "Input field holding the purchase/refund amount. Empty: the data has "
                      "no value column (purchase counts only): every purchase is worth 1, so "
                      "scores count purchases, and a refund is malformed (docs/MODELS.md, "
                      "\"Data without order values\")."},
      {.key = "mapping.negative_amount_is_refund",
       .access = MemberOf<&Config::mapping, &MappingOptions::negative_amount_is_refund>,
       .description = "A negative purchase (or refund) amount is a refund of |amount|. False: a "
                      "negative amount is malformed (dead letter). A purchase of 0 is always a "
                      "purchase worth 0."},
      {.key = "mapping.currency_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::currency_field>,
       .description = "Input field holding the currency code.",
       .non_empty = true},
      {.key = "mapping.order_id_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::order_id_field>,
       .description = "Input field holding the order id.",
       .non_empty = true},
      {.key = "mapping.items_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::items_field>,
       .description = "Input field holding the number of items.",
       .non_empty = true},
      {.key = "mapping.product_id_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::product_id_field>,
       .description = "Input field holding the product id.",
       .non_empty = true},
      {.key = "mapping.category_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::category_field>,
       .description = "Input field holding the product category.",
       .non_empty = true},
      {.key = "mapping.session_id_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::session_id_field>,
       .description = "Input field holding the session id.",
       .non_empty = true},
      {.key = "mapping.attrs_field",
       .access = MemberOf<&Config::mapping, &MappingOptions::attrs_field>,
       .description = "Input field holding the user attributes of profile events.",
       .non_empty = true},
      {.key = "mapping.ts_format",
       .access = MemberOf<&Config::mapping, &MappingOptions::ts_format>,
       .description = "\"auto\" (epoch s or ms by magnitude, or RFC 3339), \"epoch_s\", "
                      "\"epoch_ms\", \"rfc3339\", or a strftime pattern such as \"%Y%m%d\" (UTC).",
       .check = CheckTsFormat,
       .check_doc = "auto, epoch_s, epoch_ms, rfc3339, or a pattern of %Y %m %d %e %H %M %S %z %y "
                    "%F %T %s %% and literal text that has a year or %s"},
      {.key = "mapping.type_aliases",
       .access = MemberOf<&Config::mapping, &MappingOptions::type_aliases>,
       .description = "Source type name -> canonical type (page_view, search, add_to_cart, "
                      "remove_from_cart, wishlist, ad_click, purchase, refund, profile). "
                      "Canonical names are always accepted as themselves.",
       .check = CheckTypeAliases,
       .check_doc = "targets are canonical type names"},
      {.key = "mapping.default_type",
       .access = MemberOf<&Config::mapping, &MappingOptions::default_type>,
       .description = "When the input has no type field at all (e.g. an orders-only CSV), every "
                      "event gets this canonical type. Empty = type is required.",
       .check = CheckDefaultType,
       .check_doc = "empty or a canonical type name"},
      {.key = "mapping.csv_delimiter",
       .access = MemberOf<&Config::mapping, &MappingOptions::csv_delimiter>,
       .description = "CSV input (clv replay, clv train): column separator. \"auto\" (by file "
                      "extension: .csv \",\", .tsv \"tab\", other names \",\" when the first "
                      "line holds a comma, else \"whitespace\"), \",\", \"tab\", or "
                      "\"whitespace\" (runs of spaces/tabs, leading ones ignored, as in CDNOW). "
                      "Whether a file is JSONL or a table is told by its content either way (a "
                      "first non-blank '{' is JSONL).",
       .choices = {"auto", ",", "tab", "whitespace"}},
      {.key = "mapping.csv_header",
       .access = MemberOf<&Config::mapping, &MappingOptions::csv_header>,
       .description = "CSV input: true when the first line is a header (it is skipped, and names "
                      "the columns unless csv_columns is set)."},
      {.key = "mapping.csv_columns",
       .access = MemberOf<&Config::mapping, &MappingOptions::csv_columns>,
       .description = "CSV input: column names in order. Empty = take them from the header.",
       .check = CheckCsvColumns,
       .check_doc = "distinct non-empty names"},
      // validation
      {.key = "validation.max_amount",
       .access = MemberOf<&Config::validation, &ValidationOptions::max_amount>,
       .description = "Largest accepted purchase/refund amount, in the units of the amount "
                      "field. The default, 1e9, is room for money in cents (10 million in the "
                      "main unit, as `clv gen --profile wholesale,cents` writes) and for "
                      "currencies with small units, and still refuses an epoch time in seconds "
                      "or milliseconds put in the amount field by mistake.",
       .min = 0,
       .max = 1e15,
       .min_exclusive = true},
      {.key = "validation.max_future_ms",
       .access = MemberOf<&Config::validation, &ValidationOptions::max_future_ms>,
       .description = "Events more than this far ahead of the wall clock are rejected.",
       .min = 0,
       .max = 10LL * 365 * 24 * 3600 * 1000},
      {.key = "validation.min_ts_ms",
       .access = MemberOf<&Config::validation, &ValidationOptions::min_ts_ms>,
       .description = "Events before this epoch-ms are rejected (default 1990-01-01).",
       .min = 0,
       .max = 4102444800000.0},
      {.key = "validation.max_message_bytes",
       .access = MemberOf<&Config::validation, &ValidationOptions::max_message_bytes>,
       .description = "Largest accepted message, bytes.",
       .min = 1,
       .max = 1000000000},
      // stream
      {.key = "stream.batch_max_events",
       .access = MemberOf<&Config::stream, &StreamOptions::batch_max_events>,
       .description = "A micro-batch closes at this many events, or after "
                      "stream.batch_max_wait_ms, whichever comes first.",
       .min = 1,
       .max = 1000000},
      {.key = "stream.batch_max_wait_ms",
       .access = MemberOf<&Config::stream, &StreamOptions::batch_max_wait_ms>,
       .description = "A micro-batch closes this long after its first event (or at "
                      "stream.batch_max_events).",
       .min = 0,
       .max = 60000},
      {.key = "stream.commit_interval_ms",
       .access = MemberOf<&Config::stream, &StreamOptions::commit_interval_ms>,
       .description = "0: commit (state + offsets in one WriteBatch) after every micro-batch. "
                      ">0: commit at most this often; dirty states stay in the write-back cache.",
       .min = 0,
       .max = 3600000},
      {.key = "stream.commits_in_flight",
       .access = MemberOf<&Config::stream, &StreamOptions::commits_in_flight>,
       .description = "Commits whose outputs may still await the broker's acknowledgement while "
                      "the next micro-batch is processed. A commit is written only once every "
                      "score, alert and dead letter produced before it is acknowledged, in "
                      "order, so this changes speed, never what is committed. 0: wait for the "
                      "acknowledgements before reading more input.",
       .min = 0,
       .max = 16},
      {.key = "stream.threads",
       .access = MemberOf<&Config::stream, &StreamOptions::threads>,
       .description = "Threads that process a micro-batch: decoding, the scorer's steps and "
                      "the score messages are split among them, by contiguous ranges of the "
                      "batch, and merged back in the batch's order, so the output and every "
                      "commit are the same bytes for any value. 0: the machine's core count; "
                      "1: the polling thread alone.",
       .min = 0,
       .max = 256},
      {.key = "stream.emit",
       .access = MemberOf<&Config::stream, &StreamOptions::emit>,
       .description = "\"per_batch\": one score per user per micro-batch (the last one); "
                      "\"per_event\": one score per event. Either way (user_id, seq) identifies "
                      "one deterministic score.",
       .choices = {"per_batch", "per_event"}},
      {.key = "stream.dedup_window",
       .access = MemberOf<&Config::stream, &StreamOptions::dedup_window>,
       .description = "Event ids remembered per user for dedup (a fast in-memory check).",
       .min = 0,
       .max = 4096},
      {.key = "stream.dedup_retention_days",
       .access = MemberOf<&Config::stream, &StreamOptions::dedup_retention_days>,
       .description = "Every event id is also kept in RocksDB for this many days of event time "
                      "(behind the latest event of each input topic-partition), so a re-send is "
                      "caught however late it comes within that time; an event further behind "
                      "its topic-partition's latest event is dead-lettered. 0 keeps only the "
                      "per-user window.",
       .min = 0,
       .max = 3650},
      {.key = "stream.cache_max_users",
       .access = MemberOf<&Config::stream, &StreamOptions::cache_max_users>,
       .description = "Users kept in the write-back cache.",
       .min = 1,
       .max = 100000000},
      {.key = "stream.max_events",
       .access = MemberOf<&Config::stream, &StreamOptions::max_events>,
       .description = "Stop after this many input events (0 = run forever). For tests/bench.",
       .min = 0},
      {.key = "stream.idle_exit_ms",
       .access = MemberOf<&Config::stream, &StreamOptions::idle_exit_ms>,
       .description = "Stop when no event arrived for this long (0 = never). For replay jobs. "
                      "Only time with partitions assigned and the cluster reachable counts: an "
                      "outage is not idleness.",
       .min = 0,
       .max = 86400000},
      {.key = "stream.shutdown_timeout_ms",
       .access = MemberOf<&Config::stream, &StreamOptions::shutdown_timeout_ms>,
       .description = "On the way out (SIGTERM, idle exit, max_events), how long the service "
                      "waits for Kafka to acknowledge the last outputs and for the consumer to "
                      "leave the group. Past it (e.g. the cluster is unreachable) it exits with "
                      "an error: the unacknowledged batches are not committed and are read "
                      "again by the next start, nothing is lost.",
       .min = 100,
       .max = 3600000},
      // lifecycle
      {.key = "lifecycle.at_risk_gap_factor",
       .access = MemberOf<&Config::lifecycle, &LifecycleOptions::at_risk_gap_factor>,
       .description = "at_risk when quiet longer than this many times the user's own mean gap "
                      "between purchases.",
       .min = 0,
       .max = 1000,
       .min_exclusive = true},
      {.key = "lifecycle.at_risk_default_days",
       .access = MemberOf<&Config::lifecycle, &LifecycleOptions::at_risk_default_days>,
       .description = "For users with one purchase: at_risk when quiet longer than this many days.",
       .min = 0,
       .max = 36500,
       .min_exclusive = true},
      {.key = "lifecycle.at_risk_churn",
       .access = MemberOf<&Config::lifecycle, &LifecycleOptions::at_risk_churn>,
       .description = "at_risk also when churn_risk is above this.",
       .min = 0,
       .max = 1},
      {.key = "lifecycle.dormant_days",
       .access = MemberOf<&Config::lifecycle, &LifecycleOptions::dormant_days>,
       .description = "dormant when quiet for this many days.",
       .min = 0,
       .max = 36500,
       .min_exclusive = true,
       .check = CheckDormantDays,
       .check_doc = "greater than lifecycle.at_risk_default_days"},
      {.key = "lifecycle.churn_alert",
       .access = MemberOf<&Config::lifecycle, &LifecycleOptions::churn_alert>,
       .description = "Alert when churn_risk crosses this upward.",
       .min = 0,
       .max = 1},
      {.key = "lifecycle.anomaly_quantile",
       .access = MemberOf<&Config::lifecycle, &LifecycleOptions::anomaly_quantile>,
       .description = "Spend anomaly alert: order value above this quantile of the user's "
                      "predicted order-value distribution.",
       .min = 0,
       .max = 1,
       .min_exclusive = true},
      {.key = "lifecycle.high_value_clv",
       .access = MemberOf<&Config::lifecycle, &LifecycleOptions::high_value_clv>,
       .description = "Value segments: a buyer whose predicted clv is at or above this is "
                      "\"high_value\".",
       .min = 0,
       .max = 1e12},
      {.key = "lifecycle.low_value_clv",
       .access = MemberOf<&Config::lifecycle, &LifecycleOptions::low_value_clv>,
       .description = "Value segments: a buyer whose predicted clv is below this is "
                      "\"low_value\", in between \"mid_value\" (users who never bought are "
                      "\"prospect\").",
       .min = 0,
       .max = 1e12,
       .check = CheckLowValueClv,
       .check_doc = "at most lifecycle.high_value_clv"},
      // state
      {.key = "state.dir",
       .access = MemberOf<&Config::state, &StateOptions::dir>,
       .description = "RocksDB directory.",
       .non_empty = true},
      {.key = "state.block_cache_bytes",
       .access = MemberOf<&Config::state, &StateOptions::block_cache_bytes>,
       .description = "RocksDB block cache, bytes.",
       .min = 0,
       .max = 1099511627776.0},
      {.key = "state.fp16_hidden",
       .access = MemberOf<&Config::state, &StateOptions::fp16_hidden>,
       .description = "Store LSTM (h, c) as fp16 (halves the bytes; scores still deterministic)."},
      {.key = "state.changelog",
       .access = MemberOf<&Config::state, &StateOptions::changelog>,
       .description =
           "Back each input partition's users with a compacted changelog topic, so state follows "
           "its partition to another instance of the group: every commit writes its dirty users "
           "and a marker (input offsets, stream time) there after its outputs are acknowledged "
           "and before the local store; an instance assigned a partition restores it from the "
           "changelog (from its local checkpoint) before processing its events "
           "(docs/KAFKA.md \"State changelog\"; its wait for acknowledgements is a stage of the "
           "pipelined commit, polling goes on). Off: a moved partition is read again from the "
           "stored offset of the new owner, which has none of its users (one instance only)."},
      {.key = "state.changelog_topic",
       .access = MemberOf<&Config::state, &StateOptions::changelog_topic>,
       .description = "Changelog topic; empty = \"<kafka.group_id>-state-changelog\". Created "
                      "at start-up with the input topics' partition count and "
                      "cleanup.policy=compact; an existing one with another partition count (or "
                      "not compacted, on a real cluster) stops the start with an error."},
      // model
      {.key = "model.scorer",
       .access = MemberOf<&Config::model, &ModelOptions::scorer>,
       .description = "\"lstm\" (the incremental LSTM; with model.path empty the shipped "
                      "portable model, built on model.baseline_path) or \"baseline\" "
                      "(BG/NBD + Gamma-Gamma alone).",
       .choices = {"baseline", "lstm"}},
      {.key = "model.path",
       .access = MemberOf<&Config::model, &ModelOptions::path>,
       .description = "Model file. Empty = the model shipped in models/default/."},
      {.key = "model.baseline_path",
       .access = MemberOf<&Config::model, &ModelOptions::baseline_path>,
       .description = "With model.scorer=lstm and a portable model (the shipped one, `clv "
                      "train --portable`): the BG/NBD + Gamma-Gamma file (`clv fit-baseline` "
                      "on this shop's log) whose parameters and typical order value the LSTM "
                      "builds on. Empty = the shipped baseline. Other LSTM files ignore it."},
      {.key = "model.device",
       .access = MemberOf<&Config::model, &ModelOptions::device>,
       .description = "\"cpu\", \"cuda\", or \"auto\" (cuda when available).",
       .choices = {"cpu", "cuda", "auto"}},
      {.key = "model.horizon_days",
       .access = MemberOf<&Config::model, &ModelOptions::horizon_days>,
       .description = "Horizon of the CLV prediction, days.",
       .min = 0,
       .max = 3650,
       .min_exclusive = true},
      // http
      {.key = "http.port",
       .access = MemberOf<&Config::http, &HttpOptions::port>,
       .description = "0 disables the HTTP server.",
       .min = 0,
       .max = 65535},
      {.key = "http.bind",
       .access = MemberOf<&Config::http, &HttpOptions::bind>,
       .description = "Address the HTTP server listens on.",
       .non_empty = true},
      {.key = "http.advertised_url",
       .access = MemberOf<&Config::http, &HttpOptions::advertised_url>,
       .description =
           "This instance's HTTP address as clients reach it (e.g. http://10.0.0.5:8080). When "
           "set, the instances of the group announce it with the input partitions they own on "
           "the compacted topic \"<kafka.group_id>-instances\", and a /users/{id} answer 421 "
           "for a user owned elsewhere names the owner's address (owner_url). Empty: not "
           "announced.",
       .check = [](const Config& c) -> std::string {
         const auto& url = c.http.advertised_url;
         if (url.empty() || url.starts_with("http://") || url.starts_with("https://")) {
           return "";
         }
         return "must start with http:// or https://";
       }},
      {.key = "http.token",
       .access = MemberOf<&Config::http, &HttpOptions::token>,
       .description = "Bearer token required on every request when set.",
       .secret = true},
      {.key = "http.threads",
       .access = MemberOf<&Config::http, &HttpOptions::threads>,
       .description = "Threads running request handlers (connections are multiplexed on one "
                      "more I/O thread, so this bounds concurrent handlers, not connections).",
       .min = 1,
       .max = 64},
      {.key = "http.max_connections",
       .access = MemberOf<&Config::http, &HttpOptions::max_connections>,
       .description = "Open connections at most; one more closes the longest-idle one.",
       .min = 1,
       .max = 65536},
      {.key = "http.read_timeout_ms",
       .access = MemberOf<&Config::http, &HttpOptions::read_timeout_ms>,
       .description = "A request must arrive completely within this time of its first byte "
                      "(or of the connection being accepted); slower clients are dropped.",
       .min = 1,
       .max = 3600000},
      {.key = "http.write_timeout_ms",
       .access = MemberOf<&Config::http, &HttpOptions::write_timeout_ms>,
       .description = "An answer that makes no progress for this long is dropped.",
       .min = 1,
       .max = 3600000},
      {.key = "http.keep_alive_timeout_ms",
       .access = MemberOf<&Config::http, &HttpOptions::keep_alive_timeout_ms>,
       .description = "Keep-alive: idle time allowed between two requests of one connection.",
       .min = 1,
       .max = 3600000},
      {.key = "http.keep_alive_max_requests",
       .access = MemberOf<&Config::http, &HttpOptions::keep_alive_max_requests>,
       .description = "Keep-alive: requests served on one connection before it is closed.",
       .min = 1,
       .max = 1000000},
      // log
      {.key = "log.level",
       .access = MemberOf<&Config::log, &LogOptions::level>,
       .description = "Log level: trace, debug, info, warn, error.",
       .choices = {"trace", "debug", "info", "warn", "error"}},
  };
  return table;
}

std::string_view SectionOf(std::string_view key) { return key.substr(0, key.find('.')); }
std::string_view NameOf(std::string_view key) { return key.substr(key.find('.') + 1); }

bool IsMap(const Option& option) {
  Config config;
  return std::holds_alternative<StringMap*>(option.access(config));
}

bool IsSecretProperty(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (std::string_view marker : {"password", "secret", "sasl.jaas", "ssl.key"}) {
    if (lower.find(marker) != std::string::npos) return true;
  }
  return false;
}

std::string EnvironmentName(std::string_view key) {
  std::string name = "CLV_";
  for (char c : key) {
    name += (c == '.' || c == '-') ? '_'
                                   : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return name;
}

// The option a key names, and for map options addressed as
// "<key>.<entry>" the entry name.
struct Resolved {
  const Option* option = nullptr;
  std::string entry;
};

Resolved Resolve(std::string_view key) {
  for (const Option& option : OptionTable()) {
    if (option.key == key) return {&option, ""};
  }
  for (const Option& option : OptionTable()) {
    if (IsMap(option) && key.size() > option.key.size() + 1 && key.starts_with(option.key) &&
        key[option.key.size()] == '.') {
      return {&option, std::string(key.substr(option.key.size() + 1))};
    }
  }
  return {};
}

// True when `key` is a section or another dotted prefix of some option key.
bool IsGroup(std::string_view key) {
  for (const Option& option : OptionTable()) {
    if (option.key.size() > key.size() && option.key.starts_with(key) &&
        option.key[key.size()] == '.') {
      return true;
    }
  }
  return false;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The closest candidate, or "" when none is close. A candidate whose last
// dotted/underscored part equals the unknown's (wrong or missing section)
// counts as close.
std::string Suggest(std::string_view unknown, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, unknown.size() / 4) + 1;
  for (const auto& candidate : candidates) {
    size_t distance = EditDistance(unknown, candidate);
    auto tail = NameOf(candidate);
    if (tail == unknown || tail == NameOf(unknown)) distance = std::min<size_t>(distance, 1);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best;
}

std::vector<std::string> AllKeys() {
  std::vector<std::string> keys;
  for (const Option& option : OptionTable()) keys.emplace_back(option.key);
  return keys;
}

std::string UnknownKeyMessage(std::string_view key, std::string_view where) {
  std::string message = "unknown option '" + std::string(key) + "' in " + std::string(where);
  if (auto suggestion = Suggest(key, AllKeys()); !suggestion.empty()) {
    message += " (did you mean '" + suggestion + "'?)";
  }
  return message;
}

std::string Shorten(std::string text) {
  constexpr size_t kMax = 80;
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

std::string FormatNumber(double value) {
  if (std::floor(value) == value && std::fabs(value) < 1e18) {
    return std::to_string(static_cast<int64_t>(value));
  }
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

// "between 1 and 1000000", "greater than 0 and at most 1".
std::string RangeText(const Option& option) {
  if (option.min && option.max && !option.min_exclusive) {
    return "between " + FormatNumber(*option.min) + " and " + FormatNumber(*option.max);
  }
  std::string low;
  if (option.min)
    low = (option.min_exclusive ? "greater than " : "at least ") + FormatNumber(*option.min);
  std::string high = option.max ? "at most " + FormatNumber(*option.max) : "";
  if (!low.empty() && !high.empty()) return low + " and " + high;
  return low + high;
}

// ---- setting values -------------------------------------------------------

template <typename Int>
std::string IntegerFromJson(const Json& value, Int* out) {
  int64_t number = 0;
  if (value.is_number_unsigned()) {
    uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<Int>::max())) {
      return "integer " + value.dump() + " is too large";
    }
    number = static_cast<int64_t>(u);
  } else if (value.is_number_integer()) {
    number = value.get<int64_t>();
  } else if (value.is_number_float() && std::floor(value.get<double>()) == value.get<double>() &&
             std::fabs(value.get<double>()) < 9.2e18) {
    number = static_cast<int64_t>(value.get<double>());
  } else {
    return "expected an integer, got " + Shorten(value.dump());
  }
  if (number < std::numeric_limits<Int>::min() || number > std::numeric_limits<Int>::max()) {
    return "integer " + value.dump() + " does not fit in " + std::to_string(sizeof(Int) * 8) +
           " bits";
  }
  *out = static_cast<Int>(number);
  return "";
}

template <typename Int>
std::string IntegerFromString(std::string_view text, Int* out) {
  Int number = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (error == std::errc::result_out_of_range) {
    return "integer " + Quote(text) + " does not fit in " + std::to_string(sizeof(Int) * 8) +
           " bits";
  }
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    return "expected an integer, got " + Shorten(Quote(text));
  }
  *out = number;
  return "";
}

std::string DoubleFromString(std::string_view text, double* out) {
  double number = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (error != std::errc() || end != text.data() + text.size() || text.empty() ||
      !std::isfinite(number)) {
    return "expected a number, got " + Shorten(Quote(text));
  }
  *out = number;
  return "";
}

std::string BoolFromString(std::string_view text, bool* out) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") {
    *out = true;
  } else if (lower == "false" || lower == "0" || lower == "no" || lower == "off") {
    *out = false;
  } else {
    return "expected true or false, got " + Shorten(Quote(text));
  }
  return "";
}

std::string Trim(std::string_view text) {
  size_t begin = text.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return "";
  size_t end = text.find_last_not_of(" \t");
  return std::string(text.substr(begin, end - begin + 1));
}

// Splits on commas not preceded by a backslash ("\," is a literal comma);
// items are trimmed. "" gives no items.
std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> items;
  if (Trim(text).empty()) return items;
  std::string current;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] == ',') {
      current += ',';
      ++i;
    } else if (text[i] == ',') {
      items.push_back(Trim(current));
      current.clear();
    } else {
      current += text[i];
    }
  }
  items.push_back(Trim(current));
  return items;
}

// Maps merge: an entry is added or replaced; an empty value removes it.
void SetEntry(StringMap* map, const std::string& name, const std::string& value) {
  if (value.empty()) {
    map->erase(name);
  } else {
    (*map)[name] = value;
  }
}

std::string ListFromString(std::string_view text, StringList* out) {
  StringList items = SplitList(text);
  for (const auto& item : items) {
    if (item.empty()) return "empty item in comma-separated list " + Shorten(Quote(text));
  }
  *out = std::move(items);
  return "";
}

std::string MapFromString(std::string_view text, StringMap* out) {
  StringMap merged = *out;
  for (const auto& item : SplitList(text)) {
    size_t equals = item.find('=');
    if (equals == std::string::npos || Trim(item.substr(0, equals)).empty()) {
      return "expected name=value pairs separated by commas, got " + Shorten(Quote(item));
    }
    SetEntry(&merged, Trim(item.substr(0, equals)), Trim(item.substr(equals + 1)));
  }
  *out = std::move(merged);
  return "";
}

std::string MapEntryFromJson(const Json& value, std::string* out) {
  if (value.is_string()) {
    *out = value.get<std::string>();
  } else if (value.is_boolean() || value.is_number()) {
    *out = value.dump();
  } else {
    return "expected a string, got " + Shorten(value.dump());
  }
  return "";
}

// Returns what is wrong with `value` for the option ("" = set).
std::string SetFromJson(const Option& option, Config& config, const Json& value) {
  struct Visitor {
    const Json& value;
    std::string operator()(std::string* out) const {
      if (!value.is_string()) return "expected a string, got " + Shorten(value.dump());
      *out = value.get<std::string>();
      return "";
    }
    std::string operator()(int* out) const { return IntegerFromJson(value, out); }
    std::string operator()(int64_t* out) const { return IntegerFromJson(value, out); }
    std::string operator()(double* out) const {
      if (!value.is_number()) return "expected a number, got " + Shorten(value.dump());
      *out = value.get<double>();
      return "";
    }
    std::string operator()(bool* out) const {
      if (!value.is_boolean()) return "expected true or false, got " + Shorten(value.dump());
      *out = value.get<bool>();
      return "";
    }
    std::string operator()(StringList* out) const {
      if (!value.is_array()) return "expected a list of strings, got " + Shorten(value.dump());
      StringList items;
      for (const auto& item : value) {
        if (!item.is_string()) return "expected a list of strings, got " + Shorten(value.dump());
        items.push_back(item.get<std::string>());
      }
      *out = std::move(items);
      return "";
    }
    std::string operator()(StringMap* out) const {
      if (!value.is_object()) return "expected an object of strings, got " + Shorten(value.dump());
      StringMap merged = *out;
      for (const auto& [name, entry] : value.items()) {
        std::string text;
        if (auto problem = MapEntryFromJson(entry, &text); !problem.empty()) {
          return "entry " + Quote(name) + ": " + problem;
        }
        SetEntry(&merged, name, text);
      }
      *out = std::move(merged);
      return "";
    }
  };
  return std::visit(Visitor{value}, option.access(config));
}

std::string SetFromString(const Option& option, Config& config, std::string_view text) {
  struct Visitor {
    std::string_view text;
    std::string operator()(std::string* out) const {
      *out = std::string(text);
      return "";
    }
    std::string operator()(int* out) const { return IntegerFromString(text, out); }
    std::string operator()(int64_t* out) const { return IntegerFromString(text, out); }
    std::string operator()(double* out) const { return DoubleFromString(text, out); }
    std::string operator()(bool* out) const { return BoolFromString(text, out); }
    std::string operator()(StringList* out) const { return ListFromString(text, out); }
    std::string operator()(StringMap* out) const { return MapFromString(text, out); }
  };
  return std::visit(Visitor{text}, option.access(config));
}

// ---- reading values -------------------------------------------------------

OrderedJson ValueToJson(const Option& option, const Config& config, bool mask_secrets) {
  Config copy = config;  // access() needs a mutable Config; a copy keeps `config` const.
  struct Visitor {
    const Option& option;
    bool mask;
    OrderedJson operator()(std::string* value) const {
      if (mask && option.secret && !value->empty()) return "***";
      return *value;
    }
    OrderedJson operator()(int* value) const { return *value; }
    OrderedJson operator()(int64_t* value) const { return *value; }
    OrderedJson operator()(double* value) const { return *value; }
    OrderedJson operator()(bool* value) const { return *value; }
    OrderedJson operator()(StringList* value) const { return *value; }
    OrderedJson operator()(StringMap* value) const {
      OrderedJson object = OrderedJson::object();
      for (const auto& [name, entry] : *value) {
        object[name] = (mask && (option.secret || IsSecretProperty(name))) ? "***" : entry;
      }
      return object;
    }
  };
  return std::visit(Visitor{option, mask_secrets}, option.access(copy));
}

// ---- validation -----------------------------------------------------------

struct Problem {
  std::string key;
  std::string message;
};

std::vector<Problem> Problems(const Config& config) {
  std::vector<Problem> problems;
  Config copy = config;
  for (const Option& option : OptionTable()) {
    ValueRef ref = option.access(copy);
    std::string shown = Shorten(ValueToJson(option, config, true).dump());
    auto report = [&](const std::string& what) {
      problems.push_back({std::string(option.key),
                          "option '" + std::string(option.key) + "' = " + shown + ": " + what});
    };
    std::optional<double> number;
    if (auto* v = std::get_if<int*>(&ref)) number = **v;
    if (auto* v = std::get_if<int64_t*>(&ref)) number = static_cast<double>(**v);
    if (auto* v = std::get_if<double*>(&ref)) number = **v;
    if (number) {
      bool too_low =
          option.min && (option.min_exclusive ? *number <= *option.min : *number < *option.min);
      bool too_high = option.max && *number > *option.max;
      if (!std::isfinite(*number) || too_low || too_high) {
        report("out of range, must be " + RangeText(option));
        continue;
      }
    }
    if (option.non_empty) {
      bool empty = false;
      if (auto* v = std::get_if<std::string*>(&ref)) empty = (*v)->empty();
      if (auto* v = std::get_if<StringList*>(&ref)) empty = (*v)->empty();
      if (empty) {
        report("must not be empty");
        continue;
      }
    }
    if (!option.choices.empty()) {
      const std::string& value = **std::get_if<std::string*>(&ref);
      if (std::find(option.choices.begin(), option.choices.end(), value) == option.choices.end()) {
        std::vector<std::string> quoted;
        for (auto choice : option.choices) quoted.push_back(Quote(choice));
        report("must be one of " + Join(quoted));
        continue;
      }
    }
    if (option.check) {
      if (auto problem = option.check(config); !problem.empty()) report(problem);
    }
  }
  return problems;
}

// ---- loading --------------------------------------------------------------

struct Loader {
  Config config;
  std::vector<std::string> errors;
  // Option key -> where its value came from last.
  std::map<std::string, std::string> origins;

  void ApplyJsonObject(const Json& object, const std::string& prefix, const std::string& file,
                       std::set<std::string>* seen) {
    for (const auto& [name, value] : object.items()) {
      std::string key = prefix.empty() ? name : prefix + "." + name;
      Resolved resolved = Resolve(key);
      if (resolved.option == nullptr) {
        if (IsGroup(key)) {
          if (value.is_object()) {
            ApplyJsonObject(value, key, file, seen);
          } else {
            errors.push_back("option group '" + key + "' in " + file +
                             ": expected an object, got " + Shorten(value.dump()));
          }
        } else {
          errors.push_back(UnknownKeyMessage(key, file));
        }
        continue;
      }
      if (!seen->insert(key).second) {
        errors.push_back("option '" + key + "' is set twice in " + file);
        continue;
      }
      std::string problem;
      if (resolved.entry.empty()) {
        problem = SetFromJson(*resolved.option, config, value);
      } else {
        std::string text;
        problem = MapEntryFromJson(value, &text);
        if (problem.empty()) {
          SetEntry(std::get<StringMap*>(resolved.option->access(config)), resolved.entry, text);
        }
      }
      if (!problem.empty()) {
        errors.push_back("option '" + key + "' in " + file + ": " + problem);
      } else {
        origins[std::string(resolved.option->key)] = file;
      }
    }
  }

  void ApplyFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      errors.push_back("cannot read config file '" + path + "': " + std::strerror(errno));
      return;
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    const std::string text = buffer.str();
    Json root;
    try {
      root = Json::parse(text);
    } catch (const Json::parse_error& error) {
      // error.byte is the 1-based offset of the character that failed.
      size_t offset = std::min<size_t>(error.byte > 0 ? error.byte - 1 : 0, text.size());
      size_t line =
          1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(offset), '\n');
      size_t last_newline = offset == 0 ? std::string::npos : text.rfind('\n', offset - 1);
      size_t column = last_newline == std::string::npos ? offset + 1 : offset - last_newline;
      std::string reason = error.what();
      if (size_t at = reason.find("column"); at != std::string::npos) {
        if (size_t colon = reason.find(": ", at); colon != std::string::npos)
          reason = reason.substr(colon + 2);
      }
      errors.push_back(path + ":" + std::to_string(line) + ":" + std::to_string(column) +
                       ": JSON syntax error: " + reason);
      return;
    }
    if (!root.is_object()) {
      errors.push_back(path + ": expected a JSON object at the top level, got " +
                       Shorten(root.dump()));
      return;
    }
    std::set<std::string> seen;
    ApplyJsonObject(root, "", path, &seen);
  }

  void ApplyEnvironment(const std::map<std::string, std::string>& environment) {
    std::vector<std::string> known_names;
    std::map<std::string, const Option*> by_name;
    for (const Option& option : OptionTable()) {
      known_names.push_back(EnvironmentName(option.key));
      by_name[known_names.back()] = &option;
    }
    for (const auto& [name, value] : environment) {
      if (!name.starts_with("CLV_")) continue;
      bool allowed = std::find(std::begin(kEnvironmentAllowList), std::end(kEnvironmentAllowList),
                               name) != std::end(kEnvironmentAllowList);
      for (std::string_view prefix : kEnvironmentAllowPrefixes)
        allowed = allowed || name.starts_with(prefix);
      if (allowed) continue;
      auto found = by_name.find(name);
      if (found == by_name.end()) {
        std::string message = "unknown environment variable " + name +
                              " (CLV_* variables set options, see docs/CONFIGURATION.md)";
        if (auto suggestion = Suggest(name, known_names); !suggestion.empty()) {
          message += "; did you mean " + suggestion + "?";
        }
        errors.push_back(message);
        continue;
      }
      const Option& option = *found->second;
      std::string where = "environment variable " + name;
      if (auto problem = SetFromString(option, config, value); !problem.empty()) {
        errors.push_back("option '" + std::string(option.key) + "' in " + where + ": " + problem);
      } else {
        origins[std::string(option.key)] = where;
      }
    }
  }

  void ApplyOverride(const std::string& text) {
    size_t equals = text.find('=');
    if (equals == std::string::npos || equals == 0) {
      errors.push_back("override '" + Shorten(text) + "' is not key=value (--set key=value)");
      return;
    }
    std::string key = Trim(text.substr(0, equals));
    std::string value = text.substr(equals + 1);
    Resolved resolved = Resolve(key);
    if (resolved.option == nullptr) {
      errors.push_back(UnknownKeyMessage(key, "--set"));
      return;
    }
    std::string problem;
    if (resolved.entry.empty()) {
      problem = SetFromString(*resolved.option, config, value);
    } else {
      SetEntry(std::get<StringMap*>(resolved.option->access(config)), resolved.entry, value);
    }
    if (!problem.empty()) {
      errors.push_back("option '" + key + "' in --set: " + problem);
    } else {
      origins[std::string(resolved.option->key)] = "--set";
    }
  }
};

std::map<std::string, std::string> ProcessEnvironment() {
  std::map<std::string, std::string> environment;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string_view text(*entry);
    if (!text.starts_with("CLV_")) continue;
    size_t equals = text.find('=');
    if (equals == std::string_view::npos) continue;
    environment.emplace(std::string(text.substr(0, equals)), std::string(text.substr(equals + 1)));
  }
  return environment;
}

std::string MarkdownEscape(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

std::string TypeName(const Option& option) {
  Config config;
  struct Visitor {
    std::string operator()(std::string*) const { return "string"; }
    std::string operator()(int*) const { return "int"; }
    std::string operator()(int64_t*) const { return "int64"; }
    std::string operator()(double*) const { return "double"; }
    std::string operator()(bool*) const { return "bool"; }
    std::string operator()(StringList*) const { return "list of strings"; }
    std::string operator()(StringMap*) const { return "map string → string"; }
  };
  return std::visit(Visitor{}, option.access(config));
}

std::string AllowedText(const Option& option) {
  std::vector<std::string> parts;
  if (option.min || option.max) parts.push_back(RangeText(option));
  if (!option.choices.empty()) {
    std::vector<std::string> quoted;
    for (auto choice : option.choices) quoted.push_back("`" + std::string(choice) + "`");
    parts.push_back("one of " + Join(quoted));
  }
  if (option.non_empty) parts.push_back("not empty");
  if (!option.check_doc.empty()) parts.push_back(std::string(option.check_doc));
  if (parts.empty()) return "";
  return " Allowed: " + Join(parts, "; ") + ".";
}

}  // namespace

LoadResult Load(const std::string& json_path, const std::vector<std::string>& overrides) {
  return Load(json_path, overrides, ProcessEnvironment());
}

LoadResult Load(const std::string& json_path, const std::vector<std::string>& overrides,
                const std::map<std::string, std::string>& environment) {
  Loader loader;
  std::string path = json_path;
  if (path.empty()) {
    if (auto found = environment.find("CLV_CONFIG"); found != environment.end())
      path = found->second;
  }
  if (!path.empty()) loader.ApplyFile(path);
  loader.ApplyEnvironment(environment);
  for (const auto& override_text : overrides) loader.ApplyOverride(override_text);
  if (loader.errors.empty()) {
    for (const Problem& problem : Problems(loader.config)) {
      auto origin = loader.origins.find(problem.key);
      loader.errors.push_back(
          problem.message + " (set in " +
          (origin == loader.origins.end() ? std::string("defaults") : origin->second) + ")");
    }
  }
  LoadResult result;
  if (loader.errors.empty()) {
    result.config = std::move(loader.config);
  } else {
    result.error = Join(loader.errors, "\n");
  }
  return result;
}

std::string Validate(const Config& config) {
  std::string out;
  for (const Problem& problem : Problems(config)) {
    if (!out.empty()) out += "\n";
    out += problem.message;
  }
  return out;
}

std::string ToJson(const Config& config, bool mask_secrets) {
  OrderedJson root = OrderedJson::object();
  for (const Option& option : OptionTable()) {
    root[std::string(SectionOf(option.key))][std::string(NameOf(option.key))] =
        ValueToJson(option, config, mask_secrets);
  }
  return root.dump(2) + "\n";
}

std::string MarkdownTable() {
  std::string out;
  out += R"(# clvstream configuration

<!-- Generated from the option table in config/config.cpp by scripts/gen-config-docs.sh
     (`clv config --markdown`). Do not edit by hand: tests/config_test.cpp checks it. -->

Every option has a dotted key `<section>.<name>`, a type, a default and a rule for what it
accepts. The configuration is read once, at start; a change needs a restart. Any unknown key or
bad value stops the start with a message that names the option and where it was set.

## Where values come from

Later layers override earlier ones:

1. **Defaults**: the tables below (the member initializers in `config/config.h`).
2. **JSON file**: the file passed to the command (`--config FILE`), or `$CLV_CONFIG` when none
   is passed. Sections are nested objects, `{"stream": {"batch_max_events": 5000}}`; dotted keys
   are accepted too, at any level: `{"stream.batch_max_events": 5000}`. Standard JSON only (no
   comments, no trailing commas); a syntax error is reported as `FILE:LINE:COLUMN`. Setting the
   same option twice in one file is an error.
3. **Environment**: `CLV_<SECTION>_<NAME>`, the key upper-cased with dots and dashes turned into
   underscores: `CLV_STREAM_BATCH_MAX_EVENTS=5000` sets `stream.batch_max_events`. A `CLV_*`
   variable that names no option is an error, except the variables listed under "Other `CLV_*`
   variables" at the end of this page.
4. **Flags**: `--set key=value`, repeatable, applied in order: `--set stream.emit=per_event`.

Values in the environment and in flags are text:

| type | written as |
|---|---|
| int, int64, double | `5000`, `-1`, `0.25`, `1e7` (an integer option takes no fraction) |
| bool | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) |
| list of strings | comma-separated: `clickstream,orders`; `\,` is a literal comma; empty = empty list |
| map string → string | comma-separated `name=value` pairs: `CLV_KAFKA_PROPERTIES="security.protocol=SSL,ssl.ca.location=/etc/ca.pem"`; one entry as a flag: `--set kafka.properties.security.protocol=SSL` |

Maps merge across layers: each layer adds or replaces entries, and an entry with an empty value
removes it. In JSON a map is an object (numbers and booleans are taken as their text); lists
are arrays of strings; everything else has its JSON type.

The effective configuration can be printed as JSON (`ToJson()`); secrets are shown as `***`:
`http.token` and every `kafka.properties` entry whose name contains `password`, `secret`,
`sasl.jaas` or `ssl.key`.

Sample files: `config/samples/local.json` (embedded broker, every default of the Kafka section
spelled out), `config/samples/kafka.json` (a real cluster on 127.0.0.1:9092),
`config/samples/cdnow.json` (replaying the CDNOW purchase history, a whitespace-separated file).

To connect to a cluster with SASL over TLS, put librdkafka properties in `kafka.properties`
(JSON has no comments, so the example lives here):

```json
{
  "kafka": {
    "bootstrap_servers": "broker1.example.com:9093,broker2.example.com:9093",
    "properties": {
      "security.protocol": "SASL_SSL",
      "sasl.mechanism": "SCRAM-SHA-512",
      "sasl.username": "clvstream",
      "sasl.password": "change-me",
      "ssl.ca.location": "/etc/ssl/certs/kafka-ca.pem"
    }
  }
}
```

Keep the password out of the file with `CLV_KAFKA_PROPERTIES="sasl.password=..."` (it merges
into the file's map). For mutual TLS use `ssl.certificate.location`, `ssl.key.location` and
`ssl.key.password` instead of the SASL entries.
)";
  for (const Section& section : Sections()) {
    out +=
        "\n## `" + std::string(section.name) + "`\n\n" + std::string(section.description) + "\n\n";
    out += "| key | type | default | description |\n|---|---|---|---|\n";
    Config defaults;
    for (const Option& option : OptionTable()) {
      if (SectionOf(option.key) != section.name) continue;
      out += "| `" + std::string(option.key) + "` | " + TypeName(option) + " | `" +
             MarkdownEscape(ValueToJson(option, defaults, true).dump()) + "` | " +
             MarkdownEscape(std::string(option.description) + AllowedText(option)) + " |\n";
    }
  }
  out +=
      "\n## Other `CLV_*` variables\n\nThese are not options and are ignored by the option "
      "loader: `CLV_CONFIG` (the config file when no `--config` is given), and what tests, "
      "scripts, benchmarks and CMake use:";
  std::vector<std::string> names;
  for (std::string_view name : kEnvironmentAllowList) {
    if (name != "CLV_CONFIG") names.push_back("`" + std::string(name) + "`");
  }
  std::vector<std::string> prefixes;
  for (std::string_view prefix : kEnvironmentAllowPrefixes) {
    prefixes.push_back("`" + std::string(prefix) + "`");
  }
  out += " " + Join(names) + ", and every name starting with " + Join(prefixes);
  out += ".\n";
  return out;
}

}  // namespace clv::config
