// Config loading as a user meets it: defaults, the JSON file, CLV_*
// variables and --set flags in that order, error messages that name the
// option and where it was set, secrets masked, sample files, generated docs.
#include "config/config.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/test_support.h"

namespace clv::config {
namespace {

using Environment = std::map<std::string, std::string>;

// Passes when `text` contains `part`; the failure shows both.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected to contain:\n  " << part << "\nactual:\n  " << text;
}

class ConfigFile {
 public:
  explicit ConfigFile(const std::string& text) : path_((dir_.path() / "clv.json").string()) {
    std::ofstream(path_) << text;
  }
  const std::string& path() const { return path_; }

 private:
  testing::TempDir dir_;
  std::string path_;
};

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

Config LoadOk(const std::string& path, const std::vector<std::string>& overrides,
              const Environment& environment) {
  LoadResult result = Load(path, overrides, environment);
  EXPECT_TRUE(result.ok()) << result.error;
  return result.config.value_or(Config{});
}

std::string LoadError(const std::string& path, const std::vector<std::string>& overrides,
                      const Environment& environment) {
  LoadResult result = Load(path, overrides, environment);
  EXPECT_FALSE(result.ok()) << "expected an error, got config " << ToJson(*result.config);
  return result.error;
}

TEST(ConfigDefaults, NoFileNoEnvironmentGivesTheHeaderDefaults) {
  Config config = LoadOk("", {}, {});
  EXPECT_EQ(config.stream.batch_max_events, 10000);
  EXPECT_EQ(config.stream.emit, "per_batch");
  EXPECT_EQ(config.kafka.input_topics,
            (std::vector<std::string>{"clickstream", "orders", "profiles"}));
  EXPECT_EQ(config.kafka.bootstrap_servers, "");
  EXPECT_TRUE(config.kafka.properties.empty());
  EXPECT_EQ(config.validation.max_future_ms, 24LL * 3600 * 1000);
  EXPECT_EQ(config.mapping.csv_delimiter, "auto");
  EXPECT_EQ(config.log.level, "info");
  EXPECT_EQ(Validate(Config{}), "");
  EXPECT_EQ(ToJson(config), ToJson(Config{}));
}

TEST(ConfigDefaults, EffectiveJsonHasEverySectionNested) {
  auto json = nlohmann::json::parse(ToJson(Config{}));
  for (const char* section :
       {"kafka", "mapping", "validation", "stream", "lifecycle", "state", "model", "http", "log"}) {
    EXPECT_TRUE(json.contains(section)) << section;
  }
  EXPECT_EQ(json["stream"]["batch_max_events"], 10000);
  EXPECT_EQ(json["validation"]["min_ts_ms"], 631152000000LL);
  EXPECT_EQ(json["kafka"]["input_topics"][1], "orders");
}

TEST(ConfigPrecedence, FileThenEnvironmentThenFlags) {
  ConfigFile file(R"({"stream": {"batch_max_events": 5000, "emit": "per_event"},
                      "http": {"port": 8080}})");
  Config from_file = LoadOk(file.path(), {}, {});
  EXPECT_EQ(from_file.stream.batch_max_events, 5000);
  EXPECT_EQ(from_file.stream.emit, "per_event");
  EXPECT_EQ(from_file.stream.batch_max_wait_ms, 2);  // untouched options keep their default

  Environment environment = {{"CLV_STREAM_BATCH_MAX_EVENTS", "6000"}, {"CLV_HTTP_PORT", "9090"}};
  Config with_env = LoadOk(file.path(), {}, environment);
  EXPECT_EQ(with_env.stream.batch_max_events, 6000);
  EXPECT_EQ(with_env.http.port, 9090);
  EXPECT_EQ(with_env.stream.emit, "per_event");

  Config with_flags = LoadOk(
      file.path(), {"stream.batch_max_events=7000", "stream.batch_max_events=7001"}, environment);
  EXPECT_EQ(with_flags.stream.batch_max_events, 7001);  // flags apply in order
  EXPECT_EQ(with_flags.http.port, 9090);
  EXPECT_EQ(with_flags.stream.emit, "per_event");
}

TEST(ConfigPrecedence, ConfigFileFromClvConfigWhenNoPathGiven) {
  ConfigFile file(R"({"model": {"scorer": "lstm"}})");
  Config config = LoadOk("", {}, {{"CLV_CONFIG", file.path()}});
  EXPECT_EQ(config.model.scorer, "lstm");
}

TEST(ConfigFileFormat, DottedKeysAtTopLevelAndInsideSections) {
  ConfigFile file(R"({"stream.batch_max_events": 42,
                      "kafka": {"properties.client.id": "me", "properties": {"linger.ms": 5}},
                      "kafka.properties.acks": "all",
                      "state": {"fp16_hidden": false}})");
  Config config = LoadOk(file.path(), {}, {});
  EXPECT_EQ(config.stream.batch_max_events, 42);
  EXPECT_EQ(config.kafka.properties,
            (std::map<std::string, std::string>{
                {"acks", "all"}, {"client.id", "me"}, {"linger.ms", "5"}}));
  EXPECT_FALSE(config.state.fp16_hidden);
}

TEST(ConfigFileFormat, EffectiveJsonLoadsBackToTheSameConfig) {
  Config changed;
  changed.kafka.properties = {{"sasl.password", "hunter2"}, {"client.id", "x"}};
  changed.mapping.type_aliases = {{"buy", "purchase"}};
  changed.http.token = "t0ken";
  changed.lifecycle.anomaly_quantile = 0.95;
  changed.stream.max_events = 123456789012LL;
  ConfigFile file(ToJson(changed, /*mask_secrets=*/false));
  Config loaded = LoadOk(file.path(), {}, {});
  EXPECT_EQ(ToJson(loaded, false), ToJson(changed, false));
  EXPECT_EQ(loaded.http.token, "t0ken");
}

TEST(ConfigErrors, UnknownKeySuggestsTheNearestOption) {
  ConfigFile file(R"({"stream": {"batch_max_event": 5000}})");
  std::string error = LoadError(file.path(), {}, {});
  EXPECT_TRUE(Contains(error, "unknown option 'stream.batch_max_event' in " + file.path() +
                                  " (did you mean 'stream.batch_max_events'?)"));
}

TEST(ConfigErrors, KeyOutsideItsSectionSuggestsTheSection) {
  ConfigFile file(R"({"batch_max_events": 5000})");
  EXPECT_TRUE(Contains(LoadError(file.path(), {}, {}), "did you mean 'stream.batch_max_events'?"));
  EXPECT_TRUE(Contains(LoadError("", {"stream.emitt=per_event"}, {}),
                       "unknown option 'stream.emitt' in --set (did you mean 'stream.emit'?)"));
}

TEST(ConfigErrors, WrongTypeNamesKeyFileAndValue) {
  ConfigFile file(R"({"stream": {"batch_max_events": "abc"}})");
  EXPECT_TRUE(Contains(
      LoadError(file.path(), {}, {}),
      "option 'stream.batch_max_events' in " + file.path() + ": expected an integer, got \"abc\""));
  ConfigFile fraction(R"({"stream": {"batch_max_events": 10.5}, "state": {"fp16_hidden": "yes"}})");
  std::string error = LoadError(fraction.path(), {}, {});
  EXPECT_TRUE(Contains(error, "'stream.batch_max_events' in " + fraction.path() +
                                  ": expected an integer, got 10.5"));
  EXPECT_TRUE(
      Contains(error, "'state.fp16_hidden' in " + fraction.path() + ": expected true or false"));
  ConfigFile list(R"({"kafka": {"input_topics": "orders"}})");
  EXPECT_TRUE(Contains(LoadError(list.path(), {}, {}),
                       "'kafka.input_topics' in " + list.path() + ": expected a list of strings"));
  ConfigFile section(R"({"stream": 5})");
  EXPECT_TRUE(Contains(LoadError(section.path(), {}, {}),
                       "'stream' in " + section.path() + ": expected an object"));
}

TEST(ConfigErrors, WrongTypeFromEnvironmentAndFlagsNamesTheSource) {
  EXPECT_TRUE(Contains(LoadError("", {}, {{"CLV_STREAM_BATCH_MAX_EVENTS", "lots"}}),
                       "option 'stream.batch_max_events' in environment variable "
                       "CLV_STREAM_BATCH_MAX_EVENTS: expected an integer, got \"lots\""));
  EXPECT_TRUE(Contains(LoadError("", {"model.horizon_days=1y"}, {}),
                       "option 'model.horizon_days' in --set: expected a number, got \"1y\""));
  EXPECT_TRUE(Contains(LoadError("", {"state.fp16_hidden=maybe"}, {}),
                       "option 'state.fp16_hidden' in --set: expected true or false"));
  EXPECT_TRUE(Contains(LoadError("", {"stream.max_events=99999999999999999999"}, {}),
                       "does not fit in 64 bits"));
  EXPECT_TRUE(
      Contains(LoadError("", {"stream.emit"}, {}), "override 'stream.emit' is not key=value"));
}

TEST(ConfigErrors, OutOfRangeNamesKeyValueAndWhereItWasSet) {
  std::string error = LoadError("", {"stream.batch_max_events=0"}, {});
  EXPECT_TRUE(Contains(
      error, "option 'stream.batch_max_events' = 0: out of range, must be between 1 and 1000000"));
  EXPECT_TRUE(Contains(error, "(set in --set)"));

  error = LoadError("", {}, {{"CLV_HTTP_PORT", "70000"}, {"CLV_STREAM_DEDUP_WINDOW", "5000"}});
  EXPECT_TRUE(Contains(error,
                       "option 'http.port' = 70000: out of range, must be between 0 and 65535 "
                       "(set in environment variable CLV_HTTP_PORT)"));
  EXPECT_TRUE(Contains(error, "option 'stream.dedup_window' = 5000"));  // every problem at once

  ConfigFile file(R"({"model": {"horizon_days": 0}, "stream": {"batch_max_wait_ms": 60001}})");
  error = LoadError(file.path(), {}, {});
  EXPECT_TRUE(
      Contains(error, "option 'model.horizon_days' = 0.0: out of range, must be greater than 0"));
  EXPECT_TRUE(Contains(error, "option 'stream.batch_max_wait_ms' = 60001"));
  EXPECT_TRUE(Contains(error, "(set in " + file.path() + ")"));
}

TEST(ConfigErrors, BadEnumListsTheChoices) {
  EXPECT_TRUE(
      Contains(LoadError("", {"stream.emit=per_user"}, {}),
               "option 'stream.emit' = \"per_user\": must be one of \"per_batch\", \"per_event\""));
  EXPECT_TRUE(Contains(LoadError("", {"model.device=tpu"}, {}),
                       "'model.device' = \"tpu\": must be one of \"cpu\", \"cuda\", \"auto\""));
  EXPECT_TRUE(
      Contains(LoadError("", {"model.scorer=xgboost"}, {}), "'model.scorer' = \"xgboost\""));
  EXPECT_TRUE(Contains(LoadError("", {"log.level=verbose"}, {}), "'log.level' = \"verbose\""));
}

TEST(ConfigErrors, CrossFieldRulesNameTheOption) {
  EXPECT_TRUE(Contains(
      LoadError("", {"kafka.scores_topic=orders"}, {}),
      "option 'kafka.scores_topic' = \"orders\": must differ from every kafka.input_topics entry"));
  EXPECT_TRUE(Contains(
      LoadError("", {"kafka.alerts_topic=clv.scores"}, {}),
      "option 'kafka.alerts_topic' = \"clv.scores\": must differ from kafka.scores_topic"));
  EXPECT_TRUE(
      Contains(LoadError("", {"kafka.input_topics=orders,orders"}, {}),
               "'kafka.input_topics' = [\"orders\",\"orders\"]: topic \"orders\" is listed twice"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.input_topics="}, {}),
                       "'kafka.input_topics' = []: must not be empty"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.group_id="}, {}),
                       "'kafka.group_id' = \"\": must not be empty"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.dead_letter_topic=bad topic"}, {}),
                       "'kafka.dead_letter_topic'"));
  EXPECT_TRUE(Contains(LoadError("", {"http.advertised_url=10.0.0.5:8080"}, {}),
                       "option 'http.advertised_url' = \"10.0.0.5:8080\": must start with "
                       "http:// or https://"));
  EXPECT_TRUE(Contains(
      LoadError("", {"mapping.type_aliases.buy=purchased"}, {}),
      "option 'mapping.type_aliases' = {\"buy\":\"purchased\"}: alias \"buy\" -> \"purchased\""));
  EXPECT_TRUE(
      Contains(LoadError("", {"mapping.default_type=order"}, {}),
               "option 'mapping.default_type' = \"order\": must be empty or one of page_view"));
  EXPECT_TRUE(
      Contains(LoadError("", {"mapping.ts_format=%Y-%m-%Q"}, {}),
               "option 'mapping.ts_format' = \"%Y-%m-%Q\": '%Q' is not a supported conversion"));
  EXPECT_TRUE(Contains(LoadError("", {"mapping.ts_format=%H:%M"}, {}),
                       "'mapping.ts_format' = \"%H:%M\": pattern has no year"));
  EXPECT_TRUE(
      Contains(LoadError("", {"mapping.ts_format=iso"}, {}), "'mapping.ts_format' = \"iso\""));
  EXPECT_TRUE(Contains(
      LoadError("", {"mapping.csv_delimiter=;"}, {}),
      "'mapping.csv_delimiter' = \";\": must be one of \"auto\", \",\", \"tab\", \"whitespace\""));
  EXPECT_TRUE(Contains(LoadError("", {"mapping.ts_format=%d %b %Y"}, {}),
                       "'%b' is not a supported conversion"));
  EXPECT_TRUE(Contains(
      LoadError("", {"lifecycle.dormant_days=30"}, {}),
      "'lifecycle.dormant_days' = 30.0: must be greater than lifecycle.at_risk_default_days"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.properties.group.id=other"}, {}),
                       "property \"group.id\" is set through option 'kafka.group_id' instead"));
  EXPECT_TRUE(
      Contains(LoadError("", {"kafka.bootstrap_servers=a:9092,,b:9092"}, {}),
               "'kafka.bootstrap_servers' = \"a:9092,,b:9092\": has an empty host:port entry"));
  // Valid non-default forms pass.
  Config config = LoadOk("",
                         {"mapping.ts_format=%d/%m/%Y %H:%M", "mapping.type_aliases.buy=purchase",
                          "mapping.csv_delimiter=tab", "kafka.bootstrap_servers=a:9092,b:9092"},
                         {});
  EXPECT_EQ(config.mapping.type_aliases.at("buy"), "purchase");
  EXPECT_EQ(config.mapping.csv_delimiter, "tab");
}

// A bootstrap entry librdkafka would retry forever (a port that is no
// number, or out of range) stops the load naming the key and the entry.
TEST(ConfigErrors, BootstrapEntriesNeedANumericPortFrom1To65535) {
  EXPECT_TRUE(Contains(LoadError("", {"kafka.bootstrap_servers=localhost:notaport"}, {}),
                       "option 'kafka.bootstrap_servers' = \"localhost:notaport\": entry "
                       "\"localhost:notaport\": port \"notaport\" is not a number from 1 to "
                       "65535"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.bootstrap_servers=a:9092,host:99999"}, {}),
                       "entry \"host:99999\": port \"99999\" is not a number from 1 to 65535"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.bootstrap_servers=host:0"}, {}),
                       "port \"0\" is not a number from 1 to 65535"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.bootstrap_servers=host:-1"}, {}),
                       "port \"-1\" is not a number"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.bootstrap_servers=host:"}, {}),
                       "entry \"host:\": the port after ':' is empty"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.bootstrap_servers=:9092"}, {}),
                       "entry \":9092\": the host is empty"));
  EXPECT_TRUE(
      Contains(LoadError("", {"kafka.bootstrap_servers=[::1:9092"}, {}), "'[' without ']'"));
  EXPECT_TRUE(Contains(LoadError("", {}, {{"CLV_KAFKA_BOOTSTRAP_SERVERS", "kafka:90a2"}}),
                       "'kafka.bootstrap_servers'"));
  // What librdkafka accepts passes: a host alone (port 9092), protocol
  // prefixes, bracketed IPv6 with or without a port, a bare IPv6 address.
  Config config = LoadOk("",
                         {"kafka.bootstrap_servers=kafka-0, 10.0.0.1:1,PLAINTEXT://b:65535,"
                          "[::1]:9092,[fe80::1],::1"},
                         {});
  EXPECT_EQ(config.kafka.bootstrap_servers,
            "kafka-0, 10.0.0.1:1,PLAINTEXT://b:65535,[::1]:9092,[fe80::1],::1");
}

TEST(ConfigErrors, ResetOffsetsIsAChoiceAndAutoOffsetResetIsNotAProperty) {
  EXPECT_EQ(LoadOk("", {}, {}).kafka.reset_offsets, "none");
  EXPECT_EQ(LoadOk("", {"kafka.reset_offsets=latest"}, {}).kafka.reset_offsets, "latest");
  EXPECT_TRUE(Contains(LoadError("", {"kafka.reset_offsets=smallest"}, {}),
                       "'kafka.reset_offsets' = \"smallest\""));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.properties.auto.offset.reset=earliest"}, {}),
                       "property \"auto.offset.reset\" is set through option "
                       "'kafka.reset_offsets' instead"));
}

TEST(ConfigErrors, SyntaxErrorGivesFileLineAndColumn) {
  ConfigFile file("{\n  \"stream\": {\n    \"batch_max_events\": 5000,\n  }\n}\n");
  std::string error = LoadError(file.path(), {}, {});
  EXPECT_TRUE(Contains(error, file.path() + ":4:3: JSON syntax error"));
  ConfigFile truncated("{\"stream\": {\"emit\": \"per_event\"");
  EXPECT_TRUE(Contains(LoadError(truncated.path(), {}, {}), truncated.path() + ":1:"));
  ConfigFile top_level("[1, 2]");
  EXPECT_TRUE(
      Contains(LoadError(top_level.path(), {}, {}), "expected a JSON object at the top level"));
  EXPECT_TRUE(Contains(LoadError("/nonexistent/clv.json", {}, {}),
                       "cannot read config file '/nonexistent/clv.json'"));
}

TEST(ConfigErrors, OptionSetTwiceInOneFile) {
  ConfigFile file(R"({"stream": {"emit": "per_event"}, "stream.emit": "per_batch"})");
  EXPECT_TRUE(Contains(LoadError(file.path(), {}, {}),
                       "option 'stream.emit' is set twice in " + file.path()));
}

TEST(ConfigEnvironment, UnknownClvVariableIsNamedButToolVariablesAreAllowed) {
  EXPECT_TRUE(Contains(LoadError("", {}, {{"CLV_STREAM_BATCH_MAX_EVENT", "5"}}),
                       "unknown environment variable CLV_STREAM_BATCH_MAX_EVENT"));
  EXPECT_TRUE(Contains(LoadError("", {}, {{"CLV_STREAM_BATCH_MAX_EVENT", "5"}}),
                       "did you mean CLV_STREAM_BATCH_MAX_EVENTS?"));
  Config config = LoadOk("", {},
                         {{"CLV_SOURCE_DIR", "/src"},
                          {"CLV_BINARY", "/bin/clv"},
                          {"CLV_REAL_KAFKA", "1"},
                          {"CLV_TEST_SEED", "7"},
                          {"CLV_SANITIZE", "1"},
                          {"CLV_REAL_KAFKA_PORT", "19092"},
                          {"PATH", "/usr/bin"},
                          {"KAFKA_HOME", "/opt"}});
  EXPECT_EQ(config.stream.batch_max_events, 10000);
}

TEST(ConfigEnvironment, TwoArgumentLoadReadsTheProcessEnvironment) {
  ASSERT_EQ(setenv("CLV_STREAM_EMIT", "per_event", 1), 0);
  LoadResult result = Load("", {});
  unsetenv("CLV_STREAM_EMIT");
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_EQ(result.config->stream.emit, "per_event");
}

TEST(ConfigEnvironment, NamesAreUpperCasedWithUnderscores) {
  Config config = LoadOk("", {},
                         {{"CLV_KAFKA_DEAD_LETTER_TOPIC", "dlq"},
                          {"CLV_VALIDATION_MAX_AMOUNT", "2.5e3"},
                          {"CLV_STATE_FP16_HIDDEN", "off"},
                          {"CLV_MAPPING_TS_FORMAT", "epoch_ms"}});
  EXPECT_EQ(config.kafka.dead_letter_topic, "dlq");
  EXPECT_DOUBLE_EQ(config.validation.max_amount, 2500);
  EXPECT_FALSE(config.state.fp16_hidden);
  EXPECT_EQ(config.mapping.ts_format, "epoch_ms");
}

TEST(ConfigListsAndMaps, ParsedFromEnvironmentAndFlags) {
  ConfigFile file(R"({"kafka": {"properties": {"client.id": "from-file", "linger.ms": "5"}}})");
  Environment environment = {
      {"CLV_KAFKA_INPUT_TOPICS", " clicks , orders "},
      {"CLV_KAFKA_PROPERTIES", "security.protocol=SASL_SSL, sasl.jaas.config=a=b\\,c , linger.ms="},
      {"CLV_MAPPING_CSV_COLUMNS", "a\\,b,c"},
  };
  Config config = LoadOk(file.path(), {"kafka.properties.sasl.mechanism=PLAIN"}, environment);
  EXPECT_EQ(config.kafka.input_topics, (std::vector<std::string>{"clicks", "orders"}));
  EXPECT_EQ(config.mapping.csv_columns, (std::vector<std::string>{"a,b", "c"}));
  // Maps merge across layers; an empty value removes the entry.
  EXPECT_EQ(config.kafka.properties,
            (std::map<std::string, std::string>{{"client.id", "from-file"},
                                                {"sasl.jaas.config", "a=b,c"},
                                                {"sasl.mechanism", "PLAIN"},
                                                {"security.protocol", "SASL_SSL"}}));

  Config flags = LoadOk(
      "", {"kafka.input_topics=one", "mapping.type_aliases=buy=purchase,view=page_view"}, {});
  EXPECT_EQ(flags.kafka.input_topics, (std::vector<std::string>{"one"}));
  EXPECT_EQ(flags.mapping.type_aliases,
            (std::map<std::string, std::string>{{"buy", "purchase"}, {"view", "page_view"}}));

  EXPECT_TRUE(Contains(LoadError("", {}, {{"CLV_KAFKA_PROPERTIES", "security.protocol"}}),
                       "option 'kafka.properties' in environment variable CLV_KAFKA_PROPERTIES: "
                       "expected name=value pairs"));
  EXPECT_TRUE(Contains(LoadError("", {"kafka.input_topics=a,,b"}, {}), "empty item"));
}

TEST(ConfigSecrets, TokenAndKafkaSecretsAreMasked) {
  Config config = LoadOk("",
                         {"http.token=s3cr3t-token", "kafka.properties.sasl.password=pw-1",
                          "kafka.properties.ssl.key.password=pw-2",
                          "kafka.properties.sasl.jaas.config=org.Login required password=pw-3;",
                          "kafka.properties.SASL.OAUTHBEARER.CLIENT.SECRET=pw-4",
                          "kafka.properties.security.protocol=SASL_SSL"},
                         {});
  std::string masked = ToJson(config);
  for (const char* secret : {"s3cr3t-token", "pw-1", "pw-2", "pw-3", "pw-4"}) {
    EXPECT_EQ(masked.find(secret), std::string::npos) << secret;
  }
  auto json = nlohmann::json::parse(masked);
  EXPECT_EQ(json["http"]["token"], "***");
  EXPECT_EQ(json["kafka"]["properties"]["sasl.password"], "***");
  EXPECT_EQ(json["kafka"]["properties"]["security.protocol"], "SASL_SSL");
  std::string plain = ToJson(config, /*mask_secrets=*/false);
  EXPECT_TRUE(Contains(plain, "s3cr3t-token"));
  EXPECT_TRUE(Contains(plain, "pw-1"));
  EXPECT_EQ(nlohmann::json::parse(ToJson(Config{}))["http"]["token"],
            "");  // unset stays visibly unset
}

TEST(ConfigSamples, EverySampleFileLoads) {
  auto samples = testing::SourceDir() / "config" / "samples";
  std::vector<std::string> loaded;
  for (const auto& entry : std::filesystem::directory_iterator(samples)) {
    if (entry.path().extension() != ".json") continue;
    LoadResult result = Load(entry.path().string(), {}, {});
    EXPECT_TRUE(result.ok()) << entry.path() << ": " << result.error;
    loaded.push_back(entry.path().filename().string());
  }
  std::sort(loaded.begin(), loaded.end());
  EXPECT_EQ(loaded, (std::vector<std::string>{"cdnow.json", "dunnhumby.json", "grocery.json",
                                              "kafka.json", "local.json"}));

  Config kafka = LoadOk((samples / "kafka.json").string(), {}, {});
  EXPECT_EQ(kafka.kafka.bootstrap_servers, "127.0.0.1:9092");
  Config local = LoadOk((samples / "local.json").string(), {}, {});
  EXPECT_EQ(local.kafka.bootstrap_servers, "");  // embedded broker
}

TEST(ConfigSamples, CdnowSampleMatchesTheRealFile) {
  auto data = testing::SharedDataPath("cdnow/CDNOW_master.txt");
  CLV_REQUIRE_SHARED_DATA(data);
  Config config =
      LoadOk((testing::SourceDir() / "config" / "samples" / "cdnow.json").string(), {}, {});
  EXPECT_EQ(config.mapping.csv_delimiter, "whitespace");
  EXPECT_EQ(config.mapping.default_type, "purchase");
  EXPECT_EQ(config.mapping.ts_format, "%Y%m%d");

  std::ifstream in(data);
  std::string header;
  std::getline(in, header);
  std::istringstream words(header);
  std::vector<std::string> columns;
  for (std::string word; words >> word;) columns.push_back(word);
  EXPECT_TRUE(config.mapping.csv_header);
  EXPECT_EQ(config.mapping.csv_columns, columns);
  for (const std::string* field : {&config.mapping.user_id_field, &config.mapping.ts_field,
                                   &config.mapping.amount_field, &config.mapping.items_field}) {
    EXPECT_NE(std::find(columns.begin(), columns.end(), *field), columns.end()) << *field;
  }
}

TEST(ConfigDocs, ConfigurationMdIsGeneratedFromTheOptionTable) {
  std::string expected = MarkdownTable();
  auto path = testing::SourceDir() / "docs" / "CONFIGURATION.md";
  std::string actual = ReadFile(path);
  // The fresh text also goes to $TMPDIR, where scripts/gen-config-docs.sh
  // picks it up while `clv config --markdown` is not available.
  auto fresh = std::filesystem::temp_directory_path() / "clv-CONFIGURATION.md";
  if (actual != expected) std::ofstream(fresh) << expected;
  EXPECT_TRUE(actual == expected)
      << path << " is out of date with the option table in "
      << "config/config.cpp: run scripts/gen-config-docs.sh (fresh text: " << fresh << ")";
}

// ---- config.h against the option table ------------------------------------
//
// config.h is read as text, so nothing here comes from the table itself: a
// member without a row, a row under another key, a row pointing at another
// member or a CLV_* name that does not follow from the key makes these fail.

// One member of an options struct, as written in config/config.h.
struct HeaderOption {
  std::string key;  // "<section>.<member>", the section being the Config member
  std::string type;
  std::string initializer;
};

std::vector<HeaderOption> HeaderOptions() {
  const std::string header = ReadFile(testing::SourceDir() / "config" / "config.h");
  auto body_of = [&](const std::string& type) {
    const std::regex open("\nstruct " + type + " \\{\n");
    std::smatch match;
    if (!std::regex_search(header, match, open)) return std::string();
    size_t begin = static_cast<size_t>(match.position(0) + match.length(0));
    return header.substr(begin, header.find("\n};", begin) - begin);
  };
  const std::regex section_line(R"(^  (\w+) (\w+);$)");
  const std::regex member_line(R"(^  ([\w:<>, ]+?) (\w+) = (.*);$)");
  std::vector<HeaderOption> options;
  std::istringstream sections(body_of("Config"));
  for (std::string line; std::getline(sections, line);) {
    std::smatch section;
    if (!std::regex_match(line, section, section_line)) continue;
    std::istringstream members(body_of(section[1]));
    for (std::string member_text; std::getline(members, member_text);) {
      std::smatch member;
      if (!std::regex_match(member_text, member, member_line)) continue;
      options.push_back({section[2].str() + "." + member[2].str(), member[1], member[3]});
    }
  }
  return options;
}

std::string SectionOfKey(const std::string& key) { return key.substr(0, key.find('.')); }
std::string NameOfKey(const std::string& key) { return key.substr(key.find('.') + 1); }

// "stream.batch_max_events" -> "CLV_STREAM_BATCH_MAX_EVENTS" (docs/CONFIGURATION.md).
std::string EnvironmentNameOf(const std::string& key) {
  std::string name = "CLV_";
  for (unsigned char c : key) name += c == '.' ? '_' : static_cast<char>(std::toupper(c));
  return name;
}

// Keys of ToJson(): one per row of the option table.
std::vector<std::string> TableKeys(const nlohmann::json& json) {
  std::vector<std::string> keys;
  for (const auto& [section, members] : json.items()) {
    for (const auto& [name, value] : members.items()) keys.push_back(section + "." + name);
  }
  return keys;
}

// Sections (Config members) whose typed value differs between a and b.
std::vector<std::string> DifferingSections(const Config& a, const Config& b) {
  std::vector<std::string> out;
  auto add = [&](const char* name, bool equal) {
    if (!equal) out.push_back(name);
  };
  add("kafka", a.kafka == b.kafka);
  add("mapping", a.mapping == b.mapping);
  add("validation", a.validation == b.validation);
  add("stream", a.stream == b.stream);
  add("lifecycle", a.lifecycle == b.lifecycle);
  add("state", a.state == b.state);
  add("model", a.model == b.model);
  add("http", a.http == b.http);
  add("log", a.log == b.log);
  if (!(a == b) && out.empty()) out.push_back("(a section DifferingSections does not list)");
  return out;
}

// Values of the member's type that some option of that type accepts; the
// round trip takes the first one that loads and is not the default.
std::vector<std::string> CandidateValues(const std::string& type) {
  if (type == "std::string") {
    return {"x-test", "per_event", "lstm",     "baseline", "cuda",           "tab",
            "debug",  "epoch_s",   "purchase", "earliest", "http://x-test:1"};
  }
  if (type == "int" || type == "int64_t") return {"7", "1234", "123456"};
  if (type == "double") return {"0.5", "7", "600"};
  if (type == "bool") return {"false", "true"};
  if (type == "std::vector<std::string>") return {"x-test,y-test"};
  if (type == "std::map<std::string, std::string>") return {"x-test=purchase"};
  return {};
}

TEST(ConfigTable, EveryMemberOfConfigHasARowUnderItsOwnKey) {
  const std::vector<HeaderOption> header = HeaderOptions();
  ASSERT_GE(header.size(), 50u) << "config/config.h no longer parses as `  TYPE NAME = DEFAULT;` "
                                   "members of the structs named in `struct Config`";
  const std::vector<std::string> table = TableKeys(nlohmann::json::parse(ToJson(Config{})));
  std::set<std::string> header_keys;
  for (const HeaderOption& option : header) {
    header_keys.insert(option.key);
    EXPECT_TRUE(std::find(table.begin(), table.end(), option.key) != table.end())
        << "config/config.h has " << option.key << " but the option table in config/config.cpp "
        << "has no row for it (add one to OptionTable())";
  }
  for (const std::string& key : table) {
    EXPECT_TRUE(header_keys.count(key) == 1)
        << "the option table has '" << key << "', which names no member of config/config.h";
  }
}

TEST(ConfigTable, EveryOptionIsSetByItsEnvironmentNameAndChangesOnlyItsMember) {
  const Config defaults;
  const nlohmann::json default_json = nlohmann::json::parse(ToJson(defaults, false));
  for (const HeaderOption& option : HeaderOptions()) {
    const std::string env = EnvironmentNameOf(option.key);
    SCOPED_TRACE(option.key + " via " + env);
    const std::vector<std::string> candidates = CandidateValues(option.type);
    ASSERT_FALSE(candidates.empty()) << "no test values for type " << option.type;
    std::string errors;
    std::optional<Config> changed;
    for (const std::string& value : candidates) {
      LoadResult result = Load("", {}, {{env, value}});
      if (!result.ok()) {
        errors += "\n  " + env + "=" + value + ": " + result.error;
      } else if (!(*result.config == defaults)) {
        changed = result.config;
        break;
      }
    }
    ASSERT_TRUE(changed.has_value())
        << "no value set through " << env << " changed the config:" << errors;
    EXPECT_EQ(DifferingSections(*changed, defaults),
              std::vector<std::string>{SectionOfKey(option.key)});
    const nlohmann::json json = nlohmann::json::parse(ToJson(*changed, false));
    std::vector<std::string> changed_keys;
    for (const std::string& key : TableKeys(json)) {
      const auto section = SectionOfKey(key), name = NameOfKey(key);
      if (json[section][name] != default_json[section][name]) changed_keys.push_back(key);
    }
    EXPECT_EQ(changed_keys, std::vector<std::string>{option.key});
  }
}

// Where config.h's initializer is a plain literal, the table's row reads that
// member: its default is the same value.
TEST(ConfigTable, EveryRowReadsTheMemberWhoseDefaultItShows) {
  const nlohmann::json json = nlohmann::json::parse(ToJson(Config{}, false));
  const std::regex string_literal(R"re("((?:[^"\\]|\\.)*)")re");
  const std::regex number_literal(R"(-?[0-9]+(\.[0-9]*)?(e[0-9]+)?(LL)?)");
  const std::regex string_list(R"re(\{("[^"]*"(, "[^"]*")*)\})re");
  size_t compared = 0;
  for (const HeaderOption& option : HeaderOptions()) {
    const nlohmann::json shown = json.value(SectionOfKey(option.key), nlohmann::json::object())
                                     .value(NameOfKey(option.key), nlohmann::json());
    nlohmann::json expected;
    std::smatch match;
    if (std::regex_match(option.initializer, match, string_literal)) {
      expected = nlohmann::json::parse(option.initializer);
    } else if (std::regex_match(option.initializer, number_literal)) {
      std::string digits = option.initializer;
      if (digits.ends_with("LL")) digits.resize(digits.size() - 2);
      expected = std::stod(digits);
    } else if (option.initializer == "true" || option.initializer == "false") {
      expected = option.initializer == "true";
    } else if (std::regex_match(option.initializer, match, string_list)) {
      expected = nlohmann::json::parse("[" + match[1].str() + "]");
    } else {
      continue;  // an expression such as 24LL * 3600 * 1000
    }
    ++compared;
    if (expected.is_number()) {
      EXPECT_TRUE(shown.is_number() && shown.get<double>() == expected.get<double>())
          << option.key << ": config.h says " << option.initializer << ", the table shows "
          << shown;
    } else {
      EXPECT_EQ(shown, expected) << option.key << ": config.h says " << option.initializer;
    }
  }
  EXPECT_GE(compared, 40u);
}

}  // namespace
}  // namespace clv::config
