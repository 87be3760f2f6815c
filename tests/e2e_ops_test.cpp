// Operating the service, on the real `clv run` binary against a broker in its
// own process (`clv broker`) and real RocksDB:
//   * SIGTERM mid-stream: the batch is finished and committed, the process
//     exits 0, and a restart processes exactly the rest (no event twice, none
//     lost, no (user, seq) score sent twice);
//   * a second signal exits at once (130) and the next start still resumes
//     from the stored offsets with nothing lost;
//   * the HTTP API of the running service: /readyz, /users/{id}, 404 for an
//     unknown user, /top ordering, /metrics names and values, /api/summary;
//   * the dashboard in headless Chromium shows the numbers of /api/summary
//     (the screenshot is kept in <build>/artifacts/dashboard.png).
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include "config/config.h"
#include "connectors/kafka.h"
#include "state/state_store.h"
#include "tests/e2e_support.h"
#include "tests/test_support.h"

namespace clv {
namespace {

using Json = nlohmann::json;
using testing::ClvBinary;
using testing::ReaderClient;
using testing::ReadTopic;
using testing::Subprocess;
using testing::TempDir;
using testing::UniqueSuffix;
using testing::WaitUntil;
using Clock = std::chrono::steady_clock;

using testing::FreePort;
using testing::Get;
using testing::HttpAnswer;

// Sum of the samples of `series` (a metric name, optionally with `{labels`
// prefix) in Prometheus text; nullopt when absent.
std::optional<double> MetricValue(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  std::optional<double> sum;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#' || line.rfind(series, 0) != 0) continue;
    char next = line.size() > series.size() ? line[series.size()] : '\0';
    if (series.back() != '"' && next != ' ' && next != '{') continue;  // a longer name
    auto space = line.rfind(' ');
    sum = sum.value_or(0) + std::stod(line.substr(space + 1));
  }
  return sum;
}

int64_t CountedField(const std::string& log, const std::string& field) {
  auto line_start = log.find("stopped cleanly");
  if (line_start == std::string::npos) return -1;
  auto at = log.find(" " + field + "=", line_start);
  if (at == std::string::npos) return -1;
  return std::stoll(log.substr(at + field.size() + 2));
}

// `clv broker` in its own process, topics created up front (the embedded
// broker answers no CreateTopics from other processes).
using Broker = testing::BrokerProcess;

struct Input {
  std::string topic, scores, alerts, dead_letter, group;
  std::filesystem::path events;
  int64_t events_count = 0;
  std::set<std::string> users;
};

class OpsEndToEnd : public ::testing::Test {
 protected:
  // A broker with fresh topics, the input filled with `clv gen` events.
  Input MakeInput(const std::string& name, int users, int days) {
    auto suffix = name + "-" + UniqueSuffix();
    Input in{"events-" + suffix,
             "scores-" + suffix,
             "alerts-" + suffix,
             "dlq-" + suffix,
             "group-" + suffix,
             dir_.path() / (name + "-events.jsonl"),
             0,
             {}};
    broker_ = std::make_unique<Broker>(
        dir_, std::vector<std::string>{in.topic, in.scores, in.alerts, in.dead_letter});
    EXPECT_FALSE(broker_->bootstrap().empty()) << "broker did not start";
    std::string output;
    EXPECT_EQ(testing::RunCommand(
                  {ClvBinary().string(), "gen", "--users", std::to_string(users), "--days",
                   std::to_string(days), "--seed", "4242", "--out", in.events.string()},
                  dir_.path() / (name + "-gen"), 120000, &output),
              0)
        << output;
    EXPECT_EQ(testing::RunCommand({ClvBinary().string(), "replay", in.events.string(), "--topic",
                                   in.topic, "--bootstrap", bootstrap()},
                                  dir_.path() / (name + "-replay"), 120000, &output),
              0)
        << output;
    std::ifstream file(in.events);
    std::string line;
    while (std::getline(file, line)) {
      if (line.empty()) continue;
      ++in.events_count;
      in.users.insert(Json::parse(line).at("user_id").get<std::string>());
    }
    return in;
  }

  std::vector<std::string> RunArgs(const Input& in, const std::filesystem::path& state_dir,
                                   std::vector<std::string> extra) const {
    std::vector<std::string> args = {
        ClvBinary().string(),
        "run",
        "--quiet",
        "--set",
        "kafka.bootstrap_servers=" + broker_->bootstrap(),
        "--set",
        "kafka.input_topics=" + in.topic,
        "--set",
        "kafka.scores_topic=" + in.scores,
        "--set",
        "kafka.alerts_topic=" + in.alerts,
        "--set",
        "kafka.dead_letter_topic=" + in.dead_letter,
        "--set",
        "kafka.group_id=" + in.group,
        // No static membership (group.instance.id): a stopped instance really
        // leaves the group, so the next one is assigned at once.
        "--set",
        "state.dir=" + state_dir.string(),
        "--set",
        "stream.emit=per_event",
    };
    for (auto& e : extra) args.push_back(std::move(e));
    return args;
  }

  // `clv run` with HTTP on a free port and no idle exit; waits for /readyz 200.
  std::unique_ptr<Subprocess> StartServing(const Input& in, const std::filesystem::path& state_dir,
                                           const std::string& log_name, int* port,
                                           std::vector<std::string> extra = {}) {
    *port = FreePort();
    extra.insert(extra.end(),
                 {"--set", "http.port=" + std::to_string(*port), "--set", "stream.idle_exit_ms=0"});
    auto run = std::make_unique<Subprocess>(RunArgs(in, state_dir, extra), dir_.path() / log_name);
    bool ready =
        WaitUntil([&] { return Get(*port, "/readyz").status == 200 || !run->running(); }, 60000);
    EXPECT_TRUE(ready && run->running()) << "never ready: " << Get(*port, "/readyz").body << "\n"
                                         << run->Stderr();
    return run;
  }

  // Runs the service until it was idle for 4 s; returns the consumed count.
  int64_t RunToIdle(const Input& in, const std::filesystem::path& state_dir,
                    const std::string& log_name, std::string* log = nullptr) {
    Subprocess run(RunArgs(in, state_dir, {"--set", "stream.idle_exit_ms=4000"}),
                   dir_.path() / log_name);
    EXPECT_EQ(run.Wait(300000), 0) << run.Stderr();
    if (log) *log = run.Stderr();
    return CountedField(run.Stderr(), "consumed");
  }

  // Per (user, seq): the score (fails on two different contents); counts
  // the messages that repeat a key in *repeated.
  std::map<std::pair<std::string, uint64_t>, Json> Scores(const Input& in, size_t min_messages,
                                                          size_t* repeated) {
    std::map<std::pair<std::string, uint64_t>, Json> scores;
    *repeated = 0;
    for (const auto& m : ReadTopic(bootstrap(), in.scores, min_messages)) {
      auto json = Json::parse(m.value);
      std::pair key{json.at("user_id").get<std::string>(), json.at("seq").get<uint64_t>()};
      auto [it, inserted] = scores.emplace(key, json);
      if (!inserted) {
        ++*repeated;
        EXPECT_EQ(it->second, json)
            << "two different scores for " << key.first << " seq " << key.second;
      }
    }
    return scores;
  }

  static int64_t EventScores(const std::map<std::pair<std::string, uint64_t>, Json>& scores) {
    int64_t n = 0;
    for (const auto& [key, json] : scores) n += json.value("trigger", "") != "timer";
    return n;
  }

  const std::string& bootstrap() const { return broker_->bootstrap(); }

  TempDir dir_;
  std::unique_ptr<Broker> broker_;
};

// Waits until the running service has consumed at least `n` events.
bool WaitConsumed(int port, const std::string& topic, double n) {
  return WaitUntil(
      [&] {
        auto metrics = Get(port, "/metrics");
        auto consumed =
            MetricValue(metrics.body, "clv_events_consumed_total{topic=\"" + topic + "\"");
        return consumed && *consumed >= n;
      },
      120000, 20);
}

TEST_F(OpsEndToEnd, SigtermMidStreamCommitsTheBatchAndARestartProcessesExactlyTheRest) {
  auto in = MakeInput("term", 150, 120);
  ASSERT_GT(in.events_count, 3000);
  auto state_dir = dir_.path() / "state";
  int port = 0;
  auto run =
      StartServing(in, state_dir, "run-term", &port, {"--set", "stream.batch_max_events=100"});
  ASSERT_TRUE(WaitConsumed(port, in.topic, 1000)) << run->Stderr();
  run->Signal(SIGTERM);
  ASSERT_EQ(run->Wait(60000), 0) << run->Stderr();
  const std::string log = run->Stderr();
  EXPECT_NE(log.find("stop requested"), std::string::npos) << log;
  EXPECT_NE(log.find("left the group"), std::string::npos) << log;
  const int64_t first = CountedField(log, "consumed");
  ASSERT_GT(first, 0) << log;
  EXPECT_LT(first, in.events_count) << "the signal came after the end of the stream";

  std::string rest_log;
  const int64_t second = RunToIdle(in, state_dir, "run-rest", &rest_log);
  EXPECT_EQ(first + second, in.events_count)
      << "the restart must start exactly where the stopped run committed\n"
      << log << "\n---- restart:\n"
      << rest_log;

  size_t repeated = 0;
  auto scores = Scores(in, static_cast<size_t>(in.events_count), &repeated);
  EXPECT_EQ(repeated, 0u) << "a clean stop sends no score twice";
  EXPECT_EQ(EventScores(scores), in.events_count) << "every event scored exactly once";
  EXPECT_FALSE(ReadTopic(bootstrap(), in.alerts, 1).empty()) << "alerts, each strict JSON";

  // The group's offsets in Kafka (what lag tools read) are the store's.
  auto committed = testing::CommittedOffsets(bootstrap(), in.group, in.topic, 4);
  config::StateOptions options;
  options.dir = state_dir.string();
  std::unique_ptr<state::StateStore> store;
  ASSERT_TRUE(state::OpenRocksDbStoreReadOnly(options, &store).ok());
  std::map<int32_t, int64_t> stored;
  int64_t total = 0;
  for (int32_t partition = 0; partition < 4; ++partition) {
    std::optional<int64_t> offset;
    ASSERT_TRUE(store->GetOffset(in.topic, partition, &offset).ok());
    if (offset) stored[partition] = *offset;
    total += offset.value_or(0);
  }
  EXPECT_EQ(total, in.events_count);
  EXPECT_EQ(committed, stored) << "kafka-consumer-groups.sh --describe shows the stored offsets";
}

TEST_F(OpsEndToEnd, SecondSignalExitsAtOnceAndTheNextStartResumesFromStoredOffsets) {
  auto in = MakeInput("twice", 150, 120);
  auto state_dir = dir_.path() / "state";
  int port = 0;
  auto run =
      StartServing(in, state_dir, "run-twice", &port, {"--set", "stream.batch_max_events=100"});
  ASSERT_TRUE(WaitConsumed(port, in.topic, 1000)) << run->Stderr();
  run->Signal(SIGTERM);
  // Not at the same instant: two pending SIGTERMs would merge into one.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(run->running()) << "stopped before the second signal: " << run->Stderr();
  run->Signal(SIGTERM);
  ASSERT_EQ(run->Wait(10000), 130) << run->Stderr();
  EXPECT_NE(run->Stderr().find("second signal"), std::string::npos) << run->Stderr();

  RunToIdle(in, state_dir, "run-resume");
  size_t repeated = 0;
  auto scores = Scores(in, static_cast<size_t>(in.events_count), &repeated);
  EXPECT_EQ(EventScores(scores), in.events_count) << "every event scored, none lost";

  // The stored state is the end of the stream: every user, at their last seq.
  std::map<std::string, uint64_t> last_seq;
  for (const auto& [key, json] : scores)
    last_seq[key.first] = std::max(last_seq[key.first], key.second);
  config::StateOptions options;
  options.dir = state_dir.string();
  std::unique_ptr<state::StateStore> store;
  ASSERT_TRUE(state::OpenRocksDbStoreReadOnly(options, &store).ok());
  size_t users = 0;
  auto status = store->Snapshot()->ForEachUser([&](std::string_view id, const state::UserState& s) {
    ++users;
    EXPECT_EQ(s.seq, last_seq[std::string(id)]) << "user " << id;
    return true;
  });
  EXPECT_TRUE(status.ok()) << status.message;
  EXPECT_EQ(users, in.users.size());
}

// The service after consuming everything: numbers stand still.
class OpsHttp : public OpsEndToEnd {
 protected:
  void SetUp() override {
    in_ = MakeInput("http", 300, 90);
    run_ = StartServing(in_, dir_.path() / "state", "run-http", &port_);
    // Consumed is not yet folded and committed (the LSTM under ASan takes a
    // while per batch): wait until the totals stop moving as well.
    Json previous_totals;
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto summary = Json::parse(Get(port_, "/api/summary").body, nullptr, false);
          if (!summary.is_object()) return false;
          const Json totals = summary["totals"];
          const bool settled = totals == previous_totals;
          previous_totals = totals;
          return totals["events_consumed"] == in_.events_count && summary["lag"]["total"] == 0 &&
                 summary["lag"]["partitions"].size() == 4 && settled;
        },
        120000, 500))
        << Get(port_, "/api/summary").body << "\n"
        << run_->Stderr();
  }
  void TearDown() override {
    if (run_ && run_->running()) {
      run_->Signal(SIGTERM);
      EXPECT_EQ(run_->Wait(60000), 0) << run_->Stderr();
    }
  }

  Input in_;
  int port_ = 0;
  std::unique_ptr<Subprocess> run_;
};

TEST_F(OpsHttp, QueryApiMetricsAndProbesAnswerFromTheRunningService) {
  auto ready = Get(port_, "/readyz");
  EXPECT_EQ(ready.status, 200);
  auto ready_json = Json::parse(ready.body);
  EXPECT_EQ(ready_json["partitions_assigned"], 4);
  EXPECT_EQ(ready_json["state_restored"], true);
  EXPECT_EQ(ready_json["model_loaded"], true);
  EXPECT_EQ(Get(port_, "/healthz").status, 200);

  // /top: ordered, bounded by n, same users as the store says.
  auto top = Json::parse(Get(port_, "/top?n=10").body);
  ASSERT_EQ(top["users"].size(), 10u) << top;
  for (size_t i = 1; i < top["users"].size(); ++i) {
    EXPECT_GE(top["users"][i - 1]["clv"].get<double>(), top["users"][i]["clv"].get<double>());
    EXPECT_EQ(top["users"][i]["rank"], i + 1);
  }
  auto churn = Json::parse(Get(port_, "/top?n=25&by=churn_risk").body);
  ASSERT_EQ(churn["users"].size(), 25u);
  for (size_t i = 1; i < churn["users"].size(); ++i) {
    EXPECT_GE(churn["users"][i - 1]["churn_risk"].get<double>(),
              churn["users"][i]["churn_risk"].get<double>());
  }
  EXPECT_EQ(Get(port_, "/top?n=0").status, 400);

  // /users/{id} of the best user: the committed state agrees with /top.
  const auto best = top["users"][0];
  auto user = Get(port_, "/users/" + best["user_id"].get<std::string>());
  ASSERT_EQ(user.status, 200) << user.body;
  auto user_json = Json::parse(user.body);
  EXPECT_EQ(user_json["user_id"], best["user_id"]);
  EXPECT_NEAR(user_json["clv"].get<double>(), best["clv"].get<double>(),
              1e-3 * std::max(1.0, best["clv"].get<double>()));
  EXPECT_EQ(user_json["stage"], best["stage"]);
  EXPECT_GT(user_json["aggregates"]["events"].get<int>(), 0);
  EXPECT_GT(user_json["aggregates"]["purchases"].get<int>(), 0) << "the best user bought";
  EXPECT_GT(user_json["seq"].get<uint64_t>(), 0u);
  EXPECT_GT(user_json["score_ts_ms"].get<int64_t>(), 0);
  ASSERT_TRUE(user_json["top_factors"].is_array()) << user.body;
  EXPECT_EQ(user_json["last_score"]["seq"], user_json["seq"]);
  EXPECT_TRUE(user_json.contains("segment"));
  EXPECT_TRUE(user_json["attrs"].is_object());

  auto unknown = Get(port_, "/users/nobody-" + UniqueSuffix());
  EXPECT_EQ(unknown.status, 404);
  auto unknown_json = Json::parse(unknown.body, nullptr, false);
  ASSERT_TRUE(unknown_json.is_object()) << unknown.body;
  EXPECT_EQ(unknown_json["status"], 404);
  EXPECT_TRUE(unknown_json["error"].is_string());

  // /metrics: the named metrics with the values of this run.
  auto metrics = Get(port_, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  const auto& text = metrics.body;
  const std::string topic_label = "{topic=\"" + in_.topic + "\"}";
  const double events = static_cast<double>(in_.events_count);
  EXPECT_EQ(MetricValue(text, "clv_events_consumed_total" + topic_label), events) << text;
  EXPECT_EQ(MetricValue(text, "clv_events_processed_total" + topic_label), events);
  EXPECT_EQ(MetricValue(text, "clv_events_dead_lettered_total").value_or(0), 0);
  EXPECT_EQ(MetricValue(text, "clv_state_users"), static_cast<double>(in_.users.size()));
  EXPECT_GT(MetricValue(text, "clv_state_disk_bytes").value_or(0), 0);
  EXPECT_EQ(MetricValue(text, "clv_consumer_lag_messages"), 0);
  EXPECT_NE(text.find("clv_consumer_lag_messages{topic=\"" + in_.topic + "\",partition=\"3\"}"),
            std::string::npos);
  // The default scorer: the shipped LSTM.
  EXPECT_EQ(MetricValue(text, "clv_model_info{scorer=\"lstm\""), 1);
  EXPECT_EQ(MetricValue(text, "clv_scorer_user_steps_total"), events);
  EXPECT_GT(MetricValue(text, "clv_scorer_user_steps_per_second").value_or(0), 0);
  EXPECT_GE(MetricValue(text, "clv_scores_emitted_total").value_or(0), events);
  EXPECT_GT(MetricValue(text, "clv_commits_total").value_or(0), 0);
  EXPECT_EQ(MetricValue(text, "clv_event_to_score_seconds_count"), events);
  EXPECT_GT(MetricValue(text, "clv_batch_events_count").value_or(0), 0);
  EXPECT_EQ(MetricValue(text, "clv_batch_events_sum"), events);
  EXPECT_GT(MetricValue(text, "clv_commit_duration_seconds_count").value_or(0), 0);
  EXPECT_GT(MetricValue(text, "clv_alerts_emitted_total").value_or(0), 0);
  EXPECT_EQ(MetricValue(text, "clv_ready"), 1);

  // /api/summary agrees with itself and with /top.
  auto summary = Json::parse(Get(port_, "/api/summary").body);
  EXPECT_EQ(summary["users"], in_.users.size());
  int64_t staged = 0;
  for (const auto& [stage, n] : summary["stages"].items()) staged += n.get<int64_t>();
  EXPECT_EQ(staged, static_cast<int64_t>(in_.users.size()));
  int64_t histogram = 0;
  for (const auto& n : summary["clv_histogram"]["counts"]) histogram += n.get<int64_t>();
  EXPECT_EQ(histogram, static_cast<int64_t>(in_.users.size()));
  ASSERT_EQ(summary["top"].size(), 10u);
  EXPECT_EQ(summary["top"][0]["user_id"], best["user_id"]);
  EXPECT_FALSE(summary["alerts"].empty());
}

// The dashboard in a real browser shows the service's own numbers.
TEST_F(OpsHttp, DashboardInHeadlessChromiumShowsTheNumbersOfTheApi) {
  std::string chromium;
  for (const char* candidate : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (std::filesystem::exists(candidate)) chromium = candidate;
  }
  if (chromium.empty()) {
    if (testing::InCi())
      FAIL() << "chromium missing under CI (scripts/install-deps.sh installs it)";
    GTEST_SKIP() << "chromium not installed (apt-get install chromium) - dashboard not checked";
  }
  auto summary = Json::parse(Get(port_, "/api/summary").body);
  const std::string url = "http://127.0.0.1:" + std::to_string(port_) + "/";
  std::vector<std::string> flags = {
      chromium,
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--user-data-dir=" + (dir_.path() / "chromium-profile").string(),
      "--virtual-time-budget=4000",
      "--window-size=1400,1100"};
  auto dump_args = flags;
  dump_args.insert(dump_args.end(), {"--dump-dom", url});
  std::string dom;
  ASSERT_EQ(testing::RunCommand(dump_args, dir_.path() / "chromium-dom", 120000, &dom), 0) << dom;

  ASSERT_NE(dom.find("data-loaded=\"true\""), std::string::npos)
      << "the page never rendered /api/summary: " << dom.substr(0, 4000);
  std::smatch match;
  ASSERT_TRUE(
      std::regex_search(dom, match, std::regex(R"re(id="users-total" data-value="(\d+)")re")))
      << dom.substr(0, 4000);
  EXPECT_EQ(std::stoll(match[1]), summary["users"].get<int64_t>());
  ASSERT_TRUE(
      std::regex_search(dom, match, std::regex(R"re(id="events-total" data-value="(\d+)")re")));
  EXPECT_EQ(std::stoll(match[1]), summary["totals"]["events_consumed"].get<int64_t>());
  for (const auto& [stage, count] : summary["stages"].items()) {
    EXPECT_NE(dom.find("data-stage=\"" + stage + "\" data-count=\"" +
                       std::to_string(count.get<int64_t>()) + "\""),
              std::string::npos)
        << "stage " << stage;
  }
  std::vector<std::string> shown;
  const std::regex row(R"re(<tr data-user-id="([^"]*)")re");
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), row); it != std::sregex_iterator();
       ++it) {
    shown.push_back((*it)[1]);
  }
  std::vector<std::string> expected;
  for (const auto& u : summary["top"]) expected.push_back(u["user_id"].get<std::string>());
  EXPECT_EQ(shown, expected) << "top users table";
  int bars = 0;
  const std::regex bar(R"re(<rect [^>]*data-count="(\d+)")re");
  int64_t histogram = 0;
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), bar); it != std::sregex_iterator();
       ++it) {
    ++bars;
    histogram += std::stoll((*it)[1]);
  }
  EXPECT_EQ(bars, static_cast<int>(summary["clv_histogram"]["counts"].size()));
  EXPECT_EQ(histogram, summary["users"].get<int64_t>());
  EXPECT_NE(dom.find("<li data-kind="), std::string::npos) << "recent alerts listed";

  auto artifacts = ClvBinary().parent_path().parent_path() / "artifacts";
  std::filesystem::create_directories(artifacts);
  auto png = artifacts / "dashboard.png";
  std::filesystem::remove(png);
  auto shot_args = flags;
  shot_args.insert(shot_args.end(), {"--screenshot=" + png.string(), url});
  std::string output;
  ASSERT_EQ(testing::RunCommand(shot_args, dir_.path() / "chromium-shot", 120000, &output), 0)
      << output;
  ASSERT_TRUE(std::filesystem::exists(png)) << output;
  EXPECT_GT(std::filesystem::file_size(png), 10000u);
  std::printf("dashboard screenshot: %s\n", png.string().c_str());
}

}  // namespace
}  // namespace clv
