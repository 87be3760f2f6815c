// The processor fed micro-batches directly: on real components (RocksDB in a
// temp dir, the embedded broker in this process, the shipped baseline scorer)
// what a user of several input topics would notice; with a fake sink and a
// fake scorer, the content of timer re-scores, alerts and scores, and what
// happens to a non-finite model output.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "connectors/kafka.h"
#include "models/scorer.h"
#include "state/state_store.h"
#include "state/user_state.h"
#include "stream/processor.h"
#include "tests/fake_sink.h"
#include "tests/test_support.h"

namespace clv::stream {
namespace {

constexpr int64_t kDayMs = 86400000;
constexpr int64_t kStartMs = 1735689600000;  // 2025-01-01

connectors::Message Event(const std::string& topic, int64_t offset, const std::string& user,
                          int64_t day, const std::string& type, double amount = 25.0) {
  connectors::Message m;
  m.topic = topic;
  m.partition = 0;
  m.offset = offset;
  m.key = user;
  const int64_t ts = kStartMs + day * kDayMs;
  m.value = R"({"event_id":")" + topic + "-" + std::to_string(offset) + R"(","user_id":")" + user +
            R"(","type":")" + type + R"(","ts":)" + std::to_string(ts) +
            (type == "purchase" ? R"(,"amount":)" + std::to_string(amount) + "}" : "}");
  m.timestamp_ms = ts;
  return m;
}

TEST(Processor, ATopicReadFarAheadOfAnotherMakesNoEventOfTheOtherLate) {
  testing::TempDir dir;
  config::Config config;
  config.state.dir = (dir.path() / "state").string();
  config.kafka.input_topics = {"clicks", "orders"};
  ASSERT_EQ(config.stream.dedup_retention_days, 30);
  std::unique_ptr<connectors::EmbeddedBroker> broker;
  ASSERT_TRUE(connectors::EmbeddedBroker::Start(1, 1, &broker).ok());
  connectors::ClientOptions client;
  client.bootstrap_servers = broker->bootstrap_servers();
  std::unique_ptr<connectors::KafkaSink> sink;
  ASSERT_TRUE(connectors::KafkaSink::Create(client, &sink).ok());
  std::unique_ptr<state::StateStore> store;
  auto opened = state::OpenRocksDbStore(config.state, &store);
  ASSERT_TRUE(opened.ok()) << opened.message;
  std::string error;
  auto scorer = models::LoadScorer(config.model, &error);
  ASSERT_TRUE(scorer) << error;

  Processor processor(config, *store, *scorer, *sink);
  processor.OnAssigned({{"clicks", 0}, {"orders", 0}});
  // A backlog: 90 days of clicks arrive before any order (as when a consumer
  // catches up and one topic's fetches run ahead).
  std::vector<connectors::Message> clicks;
  for (int64_t day = 0; day < 90; ++day)
    clicks.push_back(Event("clicks", day, "u1", day, "page_view"));
  ASSERT_TRUE(processor.ProcessBatch(clicks).ok());
  std::vector<connectors::Message> orders;
  for (int64_t day = 0; day < 90; day += 10)
    orders.push_back(Event("orders", day / 10, "u2", day, "purchase"));
  ASSERT_TRUE(processor.ProcessBatch(orders).ok());
  ASSERT_TRUE(processor.Commit().ok());
  EXPECT_EQ(processor.counters().dead_lettered.load(), 0)
      << "orders 60+ days behind the clicks topic are on time in their own topic";
  EXPECT_EQ(processor.counters().processed.load(), 90 + 9);

  // Within one topic-partition the retention still holds, also after a
  // restart (the topic-partition's latest event time is committed with the
  // offsets): an order 40 days behind the orders topic's latest event is
  // refused (and dead-lettered), one 25 days behind it is not (it would be
  // against the clicks topic's time).
  Processor restarted(config, *store, *scorer, *sink);
  restarted.OnAssigned({{"clicks", 0}, {"orders", 0}});
  ASSERT_TRUE(restarted
                  .ProcessBatch({Event("orders", 9, "u3", 40, "purchase"),
                                 Event("orders", 10, "u4", 55, "purchase")})
                  .ok());
  ASSERT_TRUE(restarted.Commit().ok());
  EXPECT_EQ(restarted.counters().dead_lettered.load(), 1);
  EXPECT_EQ(restarted.counters().processed.load(), 1);
}

// Wraps the shipped LSTM; after the step of a purchase of 666 the user's h
// and c are overwritten: with NaN (as a diverged model or a damaged stored
// state leaves them) or, for the reference run, with the initial state.
class DamagedStateLstm : public models::Scorer {
 public:
  DamagedStateLstm(std::unique_ptr<models::Scorer> lstm, bool nan)
      : lstm_(std::move(lstm)), nan_(nan) {}
  std::string version() const override { return lstm_->version(); }
  int state_size() const override { return lstm_->state_size(); }
  void InitState(float* state) const override { lstm_->InitState(state); }
  void Step(std::span<const models::StepInput> inputs, std::span<models::Score> outputs) override {
    lstm_->Step(inputs, outputs);
    for (const auto& in : inputs) {
      if (in.event.amount != 666 || in.state == nullptr) continue;
      if (nan_) {
        std::fill(in.state, in.state + state_size(), std::numeric_limits<float>::quiet_NaN());
      } else {
        lstm_->InitState(in.state);
      }
    }
  }
  void Rescore(std::span<const models::RescoreInput> inputs,
               std::span<models::Score> outputs) override {
    lstm_->Rescore(inputs, outputs);
  }

 private:
  std::unique_ptr<models::Scorer> lstm_;
  bool nan_;
};

// The score messages of one run of the events, one batch each, through a
// fresh processor with the damaged LSTM, and its counters.
struct DamagedRun {
  std::vector<std::string> scores;
  int64_t nonfinite_scores = 0;
  int64_t state_resets = 0;
};
DamagedRun RunDamagedLstm(const std::vector<connectors::Message>& events, bool nan) {
  testing::TempDir dir;
  config::Config config;
  config.state.dir = (dir.path() / "state").string();
  config.kafka.input_topics = {"orders"};
  config.stream.emit = "per_event";
  config.model.scorer = "lstm";
  std::unique_ptr<state::StateStore> store;
  EXPECT_TRUE(state::OpenRocksDbStore(config.state, &store).ok());
  std::string error;
  auto lstm = models::LoadScorer(config.model, &error);
  EXPECT_TRUE(lstm) << error;
  if (!lstm || !store) return {};
  DamagedStateLstm scorer(std::move(lstm), nan);
  testing::FakeSink sink;
  sink.AckAll();
  DamagedRun run;
  {
    Processor processor(config, *store, scorer, sink);
    processor.OnAssigned({{"orders", 0}});
    for (const auto& event : events) EXPECT_TRUE(processor.ProcessBatch({event}).ok());
    EXPECT_TRUE(processor.Commit().ok());
    run.nonfinite_scores = processor.counters().nonfinite_scores.load();
    run.state_resets = processor.counters().nonfinite_states.load();
  }
  run.scores = sink.Values(config.kafka.scores_topic);
  return run;
}

TEST(Processor, ANonFiniteLstmStateIsResetSoTheNextEventIsScoredByTheModelAgain) {
  const std::vector<connectors::Message> events = {
      Event("orders", 0, "u1", 0, "purchase", 25), Event("orders", 1, "u1", 5, "purchase", 666),
      Event("orders", 2, "u1", 9, "purchase", 30), Event("orders", 3, "u1", 14, "purchase", 40)};
  DamagedRun damaged = RunDamagedLstm(events, /*nan=*/true);
  DamagedRun reference = RunDamagedLstm(events, /*nan=*/false);
  EXPECT_EQ(damaged.state_resets, 1);
  EXPECT_EQ(reference.state_resets, 0);
  EXPECT_EQ(damaged.nonfinite_scores, 0) << "the events after it are scored from the reset state";
  ASSERT_EQ(damaged.scores.size(), 4u);
  for (const auto& text : damaged.scores) {
    const double clv = nlohmann::json::parse(text)["clv"];
    EXPECT_TRUE(std::isfinite(clv) && clv > 0) << text;
  }
  // The events after the damage are scored by the LSTM from its initial
  // state, exactly as if the state had been reset by the model itself.
  EXPECT_EQ(damaged.scores, reference.scores);
  // Deterministic: the same events give the same bytes.
  EXPECT_EQ(RunDamagedLstm(events, true).scores, damaged.scores);
}

// A scorer whose outputs the test knows: events score clv 100 + 10 * the
// user's purchases with churn risk 0.1, timer re-scores churn risk 0.9; a
// purchase of 666 returns NaN and inf (a broken model).
class FakeScorer : public models::Scorer {
 public:
  std::string version() const override { return "fake/1"; }
  int state_size() const override { return 0; }
  void Step(std::span<const models::StepInput> inputs, std::span<models::Score> outputs) override {
    for (size_t i = 0; i < inputs.size(); ++i) {
      auto& out = outputs[i];
      out.clv = 100 + 10.0 * inputs[i].after->purchases;
      out.p_purchase = 0.5;
      out.churn_risk = 0.1;
      std::snprintf(out.top_factors[0].name.data(), out.top_factors[0].name.size(), "recency");
      out.top_factors[0].contribution = 1.5f;
      if (inputs[i].event.amount == 666) {
        const double nan = std::numeric_limits<double>::quiet_NaN();
        out.clv = nan;
        out.p_purchase = std::numeric_limits<double>::infinity();
        out.churn_risk = nan;
        out.top_factors[0].contribution = std::numeric_limits<float>::quiet_NaN();
      }
    }
  }
  void Rescore(std::span<const models::RescoreInput> inputs,
               std::span<models::Score> outputs) override {
    for (size_t i = 0; i < inputs.size(); ++i) {
      outputs[i].clv = 50;
      outputs[i].p_purchase = 0.2;
      outputs[i].churn_risk = 0.9;
    }
  }
};

// A processor on a real store, the fake sink (acknowledging everything) and
// the fake scorer, emitting every score; one input topic, "orders".
class ProcessorOnFakes : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.state.dir = (dir_.path() / "state").string();
    config_.kafka.input_topics = {"orders"};
    config_.stream.emit = "per_event";
    auto opened = state::OpenRocksDbStore(config_.state, &store_);
    ASSERT_TRUE(opened.ok()) << opened.message;
    sink_.AckAll();
    processor_ = std::make_unique<Processor>(config_, *store_, scorer_, sink_);
    processor_->OnAssigned({{"orders", 0}});
  }
  void Process(const std::vector<connectors::Message>& batch) {
    auto status = processor_->ProcessBatch(batch);
    ASSERT_TRUE(status.ok()) << status.message;
  }
  // Every value sent to `topic`, parsed strictly (NaN is not JSON).
  std::vector<nlohmann::json> Parsed(const std::string& topic) const {
    std::vector<nlohmann::json> parsed;
    for (const auto& value : sink_.Values(topic)) {
      EXPECT_NO_THROW(parsed.push_back(nlohmann::json::parse(value))) << value;
    }
    return parsed;
  }
  std::vector<nlohmann::json> ScoresOf(const std::string& user) const {
    std::vector<nlohmann::json> scores;
    for (auto& score : Parsed(config_.kafka.scores_topic)) {
      if (score["user_id"] == user) scores.push_back(score);
    }
    return scores;
  }

  testing::TempDir dir_;
  config::Config config_;
  std::unique_ptr<state::StateStore> store_;
  testing::FakeSink sink_;
  FakeScorer scorer_;
  std::unique_ptr<Processor> processor_;
};

TEST_F(ProcessorOnFakes, AScoreMessageHasItsDocumentedBytes) {
  Process({Event("orders", 0, "u1", 0, "purchase")});
  ASSERT_EQ(sink_.Values("clv.scores").size(), 1u);
  EXPECT_EQ(sink_.Values("clv.scores")[0],
            R"({"user_id":"u1","clv":110.0000,"p_purchase":0.500000,"churn_risk":0.100000,)"
            R"("stage":"new","segment":"mid_value","seq":1,"event_ts":1735689600000,)"
            R"("model":"fake/1","top_factors":[{"name":"recency","contribution":1.5000}],)"
            R"("prev_clv":0.0000,"trigger":"purchase"})");
}

TEST_F(ProcessorOnFakes, TimersReScoreQuietBuyersAsStreamTimePassesTheirDueTime) {
  // u1 buys on days 0 and 10: a 10-day rhythm, so at risk after day 30 and
  // dormant after day 190. Other users' events move stream time.
  Process({Event("orders", 0, "u1", 0, "purchase"), Event("orders", 1, "u1", 10, "purchase")});
  ASSERT_TRUE(processor_->Commit().ok());  // the timer is in the store from now on
  Process({Event("orders", 2, "u2", 29, "page_view")});
  EXPECT_EQ(ScoresOf("u1").size(), 2u) << "day 29: not due yet";
  Process({Event("orders", 3, "u2", 40, "page_view")});
  auto u1 = ScoresOf("u1");
  ASSERT_EQ(u1.size(), 3u);
  const auto& at_risk = u1[2];
  EXPECT_EQ(at_risk["trigger"], "timer");
  EXPECT_EQ(at_risk["seq"], 3);
  EXPECT_EQ(at_risk["event_ts"], kStartMs + 30 * kDayMs) << "scored at its due time, not day 40";
  EXPECT_EQ(at_risk["stage"], "at_risk");
  EXPECT_DOUBLE_EQ(at_risk["churn_risk"].get<double>(), 0.9);
  EXPECT_DOUBLE_EQ(at_risk["prev_clv"].get<double>(), 120);
  Process({Event("orders", 4, "u2", 200, "page_view")});
  u1 = ScoresOf("u1");
  ASSERT_EQ(u1.size(), 4u);
  EXPECT_EQ(u1[3]["trigger"], "timer");
  EXPECT_EQ(u1[3]["event_ts"], kStartMs + 190 * kDayMs);
  EXPECT_EQ(u1[3]["stage"], "dormant");
  EXPECT_EQ(processor_->counters().timer_rescores.load(), 2);
  ASSERT_TRUE(processor_->Commit().ok());
  std::optional<state::UserState> stored;
  ASSERT_TRUE(store_->GetUser("u1", &stored).ok());
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->seq, 4u);
  EXPECT_EQ(stored->stage, state::Stage::kDormant);
  EXPECT_EQ(stored->next_timer_ms, 0) << "no check left after dormant";
  // Nothing is left to fire for u1.
  Process({Event("orders", 5, "u2", 201, "page_view")});
  EXPECT_EQ(ScoresOf("u1").size(), 4u);
}

TEST_F(ProcessorOnFakes, AlertsCarryWhatChangedAndTheScore) {
  // Orders every 10 days, the fourth 25 times the usual; then u1 is quiet
  // while another user's event moves stream time past u1's at-risk check.
  Process(
      {Event("orders", 0, "u1", 0, "purchase", 20), Event("orders", 1, "u1", 10, "purchase", 20),
       Event("orders", 2, "u1", 20, "purchase", 20), Event("orders", 3, "u1", 30, "purchase", 500),
       Event("orders", 4, "u2", 80, "page_view")});
  auto alerts = Parsed("clv.alerts");
  std::vector<std::string> kinds;
  for (const auto& alert : alerts) kinds.push_back(alert["kind"]);
  EXPECT_EQ(kinds, std::vector<std::string>({"stage_change", "stage_change", "spend_anomaly",
                                             "stage_change", "churn_risk"}));
  ASSERT_EQ(alerts.size(), 5u);
  for (const auto& alert : alerts) EXPECT_EQ(alert["user_id"], "u1");
  EXPECT_EQ(alerts[0]["detail"],
            nlohmann::json::parse(R"({"from":"potential","to":"new","seq":1,"event_ts":)" +
                                  std::to_string(kStartMs) + "}"));
  EXPECT_EQ(alerts[1]["detail"]["from"], "new");
  EXPECT_EQ(alerts[1]["detail"]["to"], "active");
  const auto& anomaly = alerts[2]["detail"];
  EXPECT_DOUBLE_EQ(anomaly["amount"].get<double>(), 500);
  EXPECT_DOUBLE_EQ(anomaly["typical_amount"].get<double>(), 20);
  EXPECT_DOUBLE_EQ(anomaly["quantile"].get<double>(), config_.lifecycle.anomaly_quantile);
  EXPECT_EQ(anomaly["seq"], 4);
  EXPECT_EQ(alerts[2]["score"]["seq"], 4);
  EXPECT_EQ(alerts[2]["score"]["trigger"], "purchase");
  // Quiet for twice the 10-day rhythm: at risk (by the timer), churn up.
  EXPECT_EQ(alerts[3]["detail"]["from"], "active");
  EXPECT_EQ(alerts[3]["detail"]["to"], "at_risk");
  const auto& churn = alerts[4]["detail"];
  EXPECT_DOUBLE_EQ(churn["from"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(churn["to"].get<double>(), 0.9);
  EXPECT_DOUBLE_EQ(churn["threshold"].get<double>(), config_.lifecycle.churn_alert);
  EXPECT_EQ(alerts[4]["score"]["trigger"], "timer");
  EXPECT_EQ(alerts[4]["score"], alerts[3]["score"]) << "one score, two alerts";
  EXPECT_EQ(processor_->counters().alerts_emitted.load(), 5);
}

TEST_F(ProcessorOnFakes, ANonFiniteScoreIsCountedAndReplacedByThePreviousOne) {
  Process({Event("orders", 0, "u1", 0, "purchase", 25),
           Event("orders", 1, "u1", 1, "purchase", 666),
           Event("orders", 2, "u2", 1, "purchase", 666)});
  auto u1 = ScoresOf("u1");  // parsed strictly: no NaN, no inf
  ASSERT_EQ(u1.size(), 2u);
  EXPECT_DOUBLE_EQ(u1[1]["clv"].get<double>(), u1[0]["clv"].get<double>());
  EXPECT_DOUBLE_EQ(u1[1]["p_purchase"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(u1[1]["churn_risk"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(u1[1]["top_factors"][0]["contribution"].get<double>(), 0);
  auto u2 = ScoresOf("u2");
  ASSERT_EQ(u2.size(), 1u);
  EXPECT_DOUBLE_EQ(u2[0]["clv"].get<double>(), 0) << "no previous score: 0";
  EXPECT_DOUBLE_EQ(u2[0]["churn_risk"].get<double>(), 0);
  EXPECT_EQ(processor_->counters().nonfinite_scores.load(), 2);
  for (const auto& value : sink_.Values("clv.alerts")) {
    EXPECT_TRUE(nlohmann::json::accept(value)) << value;
  }
  ASSERT_TRUE(processor_->Commit().ok());
  std::optional<state::UserState> stored;
  ASSERT_TRUE(store_->GetUser("u1", &stored).ok());
  ASSERT_TRUE(stored.has_value());
  EXPECT_TRUE(std::isfinite(stored->clv) && std::isfinite(stored->churn_risk));
}

// Passes every call on to `inner`; with force_factors it asks for top_factors
// on every input (what every op computed before factors were computed on
// demand). Counts the inputs and those that asked for factors themselves.
class FactorsObserver : public models::Scorer {
 public:
  FactorsObserver(models::Scorer& inner, bool force_factors)
      : inner_(inner), force_(force_factors) {}
  std::string version() const override { return inner_.version(); }
  int state_size() const override { return inner_.state_size(); }
  void InitState(float* state) const override { inner_.InitState(state); }
  void Step(std::span<const models::StepInput> inputs, std::span<models::Score> outputs) override {
    std::vector<models::StepInput> copy(inputs.begin(), inputs.end());
    for (auto& in : copy) Count(in.want_factors);
    if (force_) {
      for (auto& in : copy) in.want_factors = true;
    }
    inner_.Step(copy, outputs);
  }
  void Rescore(std::span<const models::RescoreInput> inputs,
               std::span<models::Score> outputs) override {
    std::vector<models::RescoreInput> copy(inputs.begin(), inputs.end());
    for (auto& in : copy) Count(in.want_factors);
    if (force_) {
      for (auto& in : copy) in.want_factors = true;
    }
    inner_.Rescore(copy, outputs);
  }
  int64_t inputs = 0, asked = 0;

 private:
  void Count(bool want) {
    ++inputs;
    if (want) ++asked;
  }
  models::Scorer& inner_;
  bool force_;
};

// Two batches for 24 users: user k has 1 + k % 5 orders in the first (every
// 10 days, the fourth 25 times the usual: stage changes and spend anomalies
// on ops that are not a user's last of the batch, and rounds where some
// users are at their last op and others not), then a late click of one user
// moves stream time past the others' at-risk checks while some of them click
// again (timer re-scores whose alerts are not the user's last op).
std::vector<std::vector<connectors::Message>> FactorBatches() {
  std::vector<std::vector<connectors::Message>> batches(2);
  int64_t offset = 0;
  for (int k = 0; k < 24; ++k) {
    const std::string user = "u" + std::to_string(k);
    for (int i = 0; i <= k % 5; ++i) {
      batches[0].push_back(
          Event("orders", offset++, user, 10 * i + k % 3, "purchase", i == 3 ? 500 : 20 + k));
    }
  }
  batches[1].push_back(Event("orders", offset++, "late", 120, "page_view"));
  for (int k = 0; k < 24; k += 2) {
    batches[1].push_back(Event("orders", offset++, "u" + std::to_string(k), 121, "page_view"));
  }
  return batches;
}

struct FactorRun {
  std::vector<testing::FakeSink::Sent> sent;  // scores and alerts, in order
  int64_t inputs = 0, asked = 0;
};

// A processor's config on the one input topic "orders", its state in `dir`.
config::Config OrdersConfig(const testing::TempDir& dir, const std::string& scorer_name,
                            const std::string& emit) {
  config::Config config;
  config.state.dir = (dir.path() / "state").string();
  config.kafka.input_topics = {"orders"};
  config.stream.emit = emit;
  config.model.scorer = scorer_name;
  return config;
}

FactorRun RunForFactors(const std::string& scorer_name, const std::string& emit,
                        bool force_factors) {
  testing::TempDir dir;
  const config::Config config = OrdersConfig(dir, scorer_name, emit);
  FactorRun run;
  std::string error;
  auto inner = models::LoadScorer(config.model, &error);
  EXPECT_TRUE(inner) << error;
  if (!inner) return run;
  FactorsObserver scorer(*inner, force_factors);
  std::unique_ptr<state::StateStore> store;
  auto opened = state::OpenRocksDbStore(config.state, &store);
  EXPECT_TRUE(opened.ok()) << opened.message;
  if (!opened.ok()) return run;
  testing::FakeSink sink;
  sink.AckAll();
  Processor processor(config, *store, scorer, sink);
  processor.OnAssigned({{"orders", 0}});
  for (const auto& batch : FactorBatches()) {
    auto status = processor.ProcessBatch(batch);
    EXPECT_TRUE(status.ok()) << status.message;
    EXPECT_TRUE(processor.Commit().ok());
  }
  for (const auto& sent : sink.sent) {
    if (sent.topic == config.kafka.scores_topic || sent.topic == config.kafka.alerts_topic) {
      run.sent.push_back(sent);
    }
  }
  run.inputs = scorer.inputs;
  run.asked = scorer.asked;
  return run;
}

TEST(Processor, PublishedTopFactorsAreThoseOfAScorerThatExplainsEveryOp) {
  for (const std::string scorer : {"baseline", "lstm"}) {
    for (const std::string emit : {"per_batch", "per_event"}) {
      SCOPED_TRACE(scorer + ", " + emit);
      const FactorRun on_demand = RunForFactors(scorer, emit, false);
      const FactorRun reference = RunForFactors(scorer, emit, true);
      ASSERT_EQ(on_demand.sent.size(), reference.sent.size());
      for (size_t i = 0; i < on_demand.sent.size(); ++i) {
        EXPECT_EQ(on_demand.sent[i].topic, reference.sent[i].topic) << i;
        EXPECT_EQ(on_demand.sent[i].key, reference.sent[i].key) << i;
        EXPECT_EQ(on_demand.sent[i].value, reference.sent[i].value) << i;
      }
      // Alerts with factors on ops whose score was not published (only
      // per_batch has those): the case that needs the factors afterwards.
      // (The LSTM explains events only: its timer re-scores have no factors.)
      std::set<std::pair<std::string, int>> published, explained;
      int unpublished_alerts = 0;
      for (const auto& sent : on_demand.sent) {
        auto json = nlohmann::json::parse(sent.value);
        if (sent.topic == "clv.scores") published.insert({sent.key, json["seq"].get<int>()});
      }
      for (const auto& sent : on_demand.sent) {
        if (sent.topic != "clv.alerts") continue;
        auto score = nlohmann::json::parse(sent.value)["score"];
        if (scorer == "baseline" || score["trigger"] != "timer") {
          EXPECT_FALSE(score["top_factors"].empty()) << sent.value;
        }
        if (!published.count({sent.key, score["seq"].get<int>()})) {
          ++unpublished_alerts;
          explained.insert({sent.key, score["seq"].get<int>()});
        }
      }
      // The scorer was asked for the factors of the published scores, and
      // once more for each other op that raised an alert.
      EXPECT_EQ(on_demand.asked, static_cast<int64_t>(published.size() + explained.size()));
      if (emit == "per_batch") {
        EXPECT_GT(unpublished_alerts, 10);
        EXPECT_LT(on_demand.asked, on_demand.inputs);
      } else {
        EXPECT_EQ(unpublished_alerts, 0);
        EXPECT_EQ(on_demand.asked, on_demand.inputs);
      }
    }
  }
}

TEST_F(ProcessorOnFakes, EachWrittenCommitReportsTheOffsetsItStored) {
  std::vector<std::map<connectors::TopicPartition, int64_t>> reported;
  processor_->set_commit_observer(
      [&](const std::map<connectors::TopicPartition, int64_t>& offsets) {
        reported.push_back(offsets);
      });
  Process({Event("orders", 0, "u1", 0, "purchase"), Event("orders", 1, "u2", 0, "purchase")});
  EXPECT_TRUE(reported.empty()) << "nothing written yet";
  ASSERT_TRUE(processor_->Commit().ok());
  Process({Event("orders", 2, "u1", 1, "purchase")});
  ASSERT_TRUE(processor_->Commit().ok());
  using Offsets = std::map<connectors::TopicPartition, int64_t>;
  ASSERT_EQ(reported.size(), 2u);
  EXPECT_EQ(reported[0], (Offsets{{{"orders", 0}, 2}}));
  EXPECT_EQ(reported[1], (Offsets{{{"orders", 0}, 3}}));
}

TEST_F(ProcessorOnFakes, LostPartitionsDropWhatKafkaHasNotAndAreScoredTheSameAgain) {
  // A sink that acknowledges only when told.
  testing::FakeSink sink;
  Processor processor(config_, *store_, scorer_, sink);
  processor.OnAssigned({{"orders", 0}});
  ASSERT_TRUE(processor
                  .ProcessBatch({Event("orders", 0, "u1", 0, "purchase"),
                                 Event("orders", 1, "u1", 1, "page_view")})
                  .ok());
  ASSERT_TRUE(processor.Seal().ok());
  sink.Ack(sink.marks());
  ASSERT_TRUE(processor.WriteAcknowledged(0).ok());  // in Kafka and in the store
  const size_t first = sink.Values(config_.kafka.scores_topic).size();
  ASSERT_EQ(first, 2u);
  // Sealed but not acknowledged, then processed but not sealed.
  const std::vector<connectors::Message> rest = {Event("orders", 2, "u1", 2, "purchase"),
                                                 Event("orders", 3, "u2", 2, "purchase"),
                                                 Event("orders", 4, "u2", 3, "add_to_cart")};
  ASSERT_TRUE(processor.ProcessBatch({rest[0], rest[1]}).ok());
  ASSERT_TRUE(processor.Seal().ok());
  ASSERT_TRUE(processor.ProcessBatch({rest[2]}).ok());
  auto sent = sink.Values(config_.kafka.scores_topic);
  const std::vector<std::string> unacknowledged(sent.begin() + static_cast<std::ptrdiff_t>(first),
                                                sent.end());
  ASSERT_EQ(unacknowledged.size(), 3u);

  processor.OnLost({{"orders", 0}});
  EXPECT_EQ(sink.purges, 1) << "the dropped commit's outputs still in flight are purged";
  EXPECT_EQ(processor.sealed_count(), 0u);
  EXPECT_FALSE(processor.HasUncommitted());
  EXPECT_TRUE(processor.callback_error().empty()) << processor.callback_error();
  // The store has the acknowledged commit only.
  std::optional<int64_t> offset;
  ASSERT_TRUE(store_->GetOffset("orders", 0, &offset).ok());
  EXPECT_EQ(offset, 2);
  std::optional<state::UserState> u1, u2;
  ASSERT_TRUE(store_->GetUser("u1", &u1).ok());
  ASSERT_TRUE(u1.has_value());
  EXPECT_EQ(u1->seq, 2u);
  ASSERT_TRUE(store_->GetUser("u2", &u2).ok());
  EXPECT_FALSE(u2.has_value());
  // Lost events of its partitions polled before the loss are not processed.
  ASSERT_TRUE(processor.ProcessBatch({Event("orders", 5, "u3", 3, "purchase")}).ok());
  EXPECT_EQ(sink.Values(config_.kafka.scores_topic).size(), sent.size());

  // Assigned again (as the next owner would be), it reads those events again
  // from the stored offset and sends the same scores, byte for byte.
  sink.AckAll();
  processor.OnAssigned({{"orders", 0}});
  EXPECT_EQ(processor.StartOffset({"orders", 0}), 2);
  ASSERT_TRUE(processor.ProcessBatch(rest).ok());
  ASSERT_TRUE(processor.Commit().ok());
  sent = sink.Values(config_.kafka.scores_topic);
  ASSERT_EQ(sent.size(), first + 6);
  EXPECT_EQ(std::vector<std::string>(sent.end() - 3, sent.end()), unacknowledged);
  ASSERT_TRUE(store_->GetUser("u1", &u1).ok());
  EXPECT_EQ(u1->seq, 3u);
  ASSERT_TRUE(store_->GetUser("u2", &u2).ok());
  ASSERT_TRUE(u2.has_value());
  EXPECT_EQ(u2->seq, 2u);
  EXPECT_EQ(u2->aggregates.purchases, 1u);
}

// Passes every call on to `inner`, and clones to wrappers of the inner
// scorer's clones that count their calls and the inputs they were given.
class CountingClones : public models::Scorer {
 public:
  explicit CountingClones(std::unique_ptr<models::Scorer> inner,
                          std::shared_ptr<std::atomic<int64_t>> clone_inputs = nullptr)
      : inner_(std::move(inner)),
        clone_inputs_(clone_inputs ? clone_inputs : std::make_shared<std::atomic<int64_t>>(0)),
        is_clone_(clone_inputs != nullptr) {}
  std::string version() const override { return inner_->version(); }
  int state_size() const override { return inner_->state_size(); }
  void InitState(float* state) const override { inner_->InitState(state); }
  void Step(std::span<const models::StepInput> inputs, std::span<models::Score> outputs) override {
    if (is_clone_) clone_inputs_->fetch_add(static_cast<int64_t>(inputs.size()));
    inner_->Step(inputs, outputs);
  }
  void Rescore(std::span<const models::RescoreInput> inputs,
               std::span<models::Score> outputs) override {
    if (is_clone_) clone_inputs_->fetch_add(static_cast<int64_t>(inputs.size()));
    inner_->Rescore(inputs, outputs);
  }
  std::unique_ptr<models::Scorer> Clone() const override {
    auto inner = inner_->Clone();
    if (!inner) return nullptr;
    return std::make_unique<CountingClones>(std::move(inner), clone_inputs_);
  }
  int64_t clone_inputs() const { return clone_inputs_->load(); }

 private:
  std::unique_ptr<models::Scorer> inner_;
  std::shared_ptr<std::atomic<int64_t>> clone_inputs_;
  bool is_clone_ = false;
};

// 3,000 users on two partitions, three batches of about 4,000 messages:
// page views, purchases (some 20x the usual, for alerts), a few malformed
// messages and re-sent duplicates; the last batch jumps stream time so that
// timers re-score quiet users.
std::vector<std::vector<connectors::Message>> ThreadBatches() {
  std::vector<std::vector<connectors::Message>> batches(3);
  int64_t offsets[2] = {0, 0};
  auto add = [&](size_t b, int k, int64_t day, const std::string& type, double amount) {
    const int32_t partition = k % 2;
    auto m = Event("orders", offsets[partition]++, "u" + std::to_string(k), day, type, amount);
    m.partition = partition;
    // Event ids unique across the partitions: "orders-p1-<offset>".
    m.value.replace(m.value.find("orders-"), 7, "orders-p" + std::to_string(partition) + "-");
    batches[b].push_back(m);
  };
  for (size_t b = 0; b < 2; ++b) {
    for (int k = 0; k < 3000; ++k) {
      const int64_t day = static_cast<int64_t>(b) * 20 + k % 7;
      add(b, k, day, "page_view", 0);
      if (k % 3 != 0) add(b, k, day, "purchase", (k % 97 == 0 ? 400.0 : 20.0) + k % 11);
      if (k % 250 == 0) {
        connectors::Message bad = batches[b].back();
        bad.offset = offsets[bad.partition]++;
        bad.value = "{\"user_id\":\"u" + std::to_string(k) + "\",\"type\":";  // malformed
        batches[b].push_back(bad);
      }
      if (k % 400 == 0) {
        connectors::Message again = batches[b].back();
        if (again.value.back() == '}') {
          again.offset = offsets[again.partition]++;
          batches[b].push_back(again);  // the same event id again
        }
      }
    }
  }
  for (int k = 0; k < 3000; k += 5) add(2, k, 200 + k % 3, "page_view", 0);
  return batches;
}

struct ThreadRun {
  std::vector<testing::FakeSink::Sent> sent;
  std::map<std::string, std::string> states;  // encoded, per user
  int64_t clone_inputs = 0;
  int64_t processed = 0, dead_lettered = 0, duplicates = 0, timer_rescores = 0;
};

ThreadRun RunWithThreads(const std::string& scorer_name, const std::string& emit, int threads) {
  testing::TempDir dir;
  config::Config config = OrdersConfig(dir, scorer_name, emit);
  config.stream.threads = threads;
  ThreadRun run;
  std::string error;
  auto inner = models::LoadScorer(config.model, &error);
  EXPECT_TRUE(inner) << error;
  if (!inner) return run;
  CountingClones scorer(std::move(inner));
  std::unique_ptr<state::StateStore> store;
  auto opened = state::OpenRocksDbStore(config.state, &store);
  EXPECT_TRUE(opened.ok()) << opened.message;
  if (!opened.ok()) return run;
  testing::FakeSink sink;
  sink.AckAll();
  {
    Processor processor(config, *store, scorer, sink);
    processor.OnAssigned({{"orders", 0}, {"orders", 1}});
    for (const auto& batch : ThreadBatches()) {
      auto status = processor.ProcessBatch(batch);
      EXPECT_TRUE(status.ok()) << status.message;
      EXPECT_TRUE(processor.Commit().ok());
    }
    const auto& c = processor.counters();
    run.processed = c.processed.load();
    run.dead_lettered = c.dead_lettered.load();
    run.duplicates = c.duplicates.load();
    run.timer_rescores = c.timer_rescores.load();
  }
  std::vector<std::string> users;
  for (int k = 0; k < 3000; ++k) users.push_back("u" + std::to_string(k));
  std::vector<std::optional<state::UserState>> states;
  EXPECT_TRUE(store->MultiGetUsers(users, &states).ok());
  for (size_t i = 0; i < users.size(); ++i) {
    if (states[i]) state::Encode(*states[i], &run.states[users[i]]);
  }
  run.sent = sink.sent;
  run.clone_inputs = scorer.clone_inputs();
  return run;
}

// stream.threads splits a batch's decoding, scorer steps and score messages
// among threads; what the processor sends and stores is the same bytes, in
// the same order, as with one thread.
TEST(Processor, SeveralThreadsSendAndStoreTheSameBytesAsOne) {
  for (const std::string scorer : {"baseline", "lstm"}) {
    for (const std::string emit : {"per_event", "per_batch"}) {
      SCOPED_TRACE(scorer + ", " + emit);
      const ThreadRun one = RunWithThreads(scorer, emit, 1);
      const ThreadRun three = RunWithThreads(scorer, emit, 3);
      EXPECT_EQ(one.clone_inputs, 0);
      EXPECT_GT(three.clone_inputs, 1000) << "the other threads' scorers did part of the steps";
      EXPECT_EQ(one.processed, 2 * 5000 + 600);  // the duplicates are counted apart
      EXPECT_EQ(one.dead_lettered, 24);
      EXPECT_GT(one.duplicates, 0);
      EXPECT_GT(one.timer_rescores, 0);
      EXPECT_EQ(three.processed, one.processed);
      EXPECT_EQ(three.dead_lettered, one.dead_lettered);
      EXPECT_EQ(three.duplicates, one.duplicates);
      EXPECT_EQ(three.timer_rescores, one.timer_rescores);
      ASSERT_EQ(three.sent.size(), one.sent.size());
      size_t alerts = 0;
      for (size_t i = 0; i < one.sent.size(); ++i) {
        EXPECT_EQ(three.sent[i].topic, one.sent[i].topic) << i;
        EXPECT_EQ(three.sent[i].key, one.sent[i].key) << i;
        ASSERT_EQ(three.sent[i].value, one.sent[i].value) << i;
        EXPECT_EQ(three.sent[i].headers, one.sent[i].headers) << i;
        if (one.sent[i].topic == "clv.alerts") ++alerts;
      }
      EXPECT_GT(alerts, 0u);
      EXPECT_EQ(one.states.size(), 3000u);
      EXPECT_TRUE(three.states == one.states) << "stored user states differ";
    }
  }
}

}  // namespace
}  // namespace clv::stream
