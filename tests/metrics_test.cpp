// Prometheus exposition of stream/metrics.h: exact text of counters, gauges
// and histograms, escaping, name rules, ServiceMetrics' names, concurrency.
#include "stream/metrics.h"

#include <cmath>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

namespace clv::stream {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Checks `text` against the text format 0.0.4 grammar (one sample or comment
// per line, HELP and TYPE before a family's samples, valid names, label
// values quoted with only \\, \" and \n escapes, a float value). Returns the
// first problem, or "" when fine. Fills `types` with name -> type.
std::string ValidateExposition(const std::string& text, std::map<std::string, std::string>* types) {
  if (text.empty() || text.back() != '\n') return "does not end with a newline";
  static const std::regex kHelp(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (?:[^\\\n]|\\\\|\\n)*)");
  static const std::regex kType(
      R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  static const std::regex kSample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*")*\})? (NaN|[+-]Inf|-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?))");
  std::set<std::string> helped;
  std::string current;
  for (const std::string& line : Lines(text)) {
    std::smatch match;
    if (std::regex_match(line, match, kHelp)) {
      if (!helped.insert(match[1]).second) return "HELP twice for " + match[1].str();
      current = match[1];
    } else if (std::regex_match(line, match, kType)) {
      if (match[1] != current) return "TYPE without HELP first: " + line;
      if (types->count(match[1])) return "TYPE twice for " + match[1].str();
      (*types)[match[1]] = match[2];
    } else if (std::regex_match(line, match, kSample)) {
      const std::string name = match[1];
      const bool belongs =
          name == current ||
          (types->count(current) && (*types)[current] == "histogram" &&
           (name == current + "_bucket" || name == current + "_sum" || name == current + "_count"));
      if (!belongs) return "sample outside its family: " + line;
    } else {
      return "not in the exposition format: " + line;
    }
  }
  return "";
}

TEST(MetricsRegistry, RendersCountersGaugesAndLabelsExactly) {
  MetricsRegistry registry;
  Counter& plain = registry.AddCounter("clv_things_total", "Things seen.");
  Family<Counter>& by_topic =
      registry.AddCounterFamily("clv_events_total", "Events per topic.", {"topic"});
  Gauge& gauge = registry.AddGauge("clv_temperature_celsius", "A gauge.");
  plain.Inc();
  plain.Inc(41);
  by_topic.WithLabels({"orders"}).Inc(3);
  by_topic.WithLabels({"clickstream"}).Inc(7);
  by_topic.WithLabels({"orders"}).Inc(2);
  gauge.Set(-1.5);
  gauge.Add(0.25);
  EXPECT_EQ(registry.Render(),
            "# HELP clv_things_total Things seen.\n"
            "# TYPE clv_things_total counter\n"
            "clv_things_total 42\n"
            "# HELP clv_events_total Events per topic.\n"
            "# TYPE clv_events_total counter\n"
            "clv_events_total{topic=\"clickstream\"} 7\n"
            "clv_events_total{topic=\"orders\"} 5\n"
            "# HELP clv_temperature_celsius A gauge.\n"
            "# TYPE clv_temperature_celsius gauge\n"
            "clv_temperature_celsius -1.25\n");
}

TEST(MetricsRegistry, EscapesLabelValuesAndHelp) {
  MetricsRegistry registry;
  auto& family = registry.AddGaugeFamily(
      "clv_odd", "Help with \\ backslash\nand a newline \"quoted\".", {"topic", "partition"});
  family.WithLabels({"a\"b\\c\nd", "0"}).Set(1);
  const std::string text = registry.Render();
  EXPECT_NE(text.find("# HELP clv_odd Help with \\\\ backslash\\nand a newline \"quoted\".\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("clv_odd{topic=\"a\\\"b\\\\c\\nd\",partition=\"0\"} 1\n"), std::string::npos)
      << text;
  std::map<std::string, std::string> types;
  EXPECT_EQ(ValidateExposition(text, &types), "");
}

TEST(MetricsRegistry, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry registry;
  Histogram& histogram = registry.AddHistogram("clv_latency_seconds", "Latency.", {0.005, 0.1, 1});
  for (double value : {0.001, 0.005, 0.05, 0.1, 0.5, 2.0, 100.0}) histogram.Observe(value);
  histogram.Observe(std::numeric_limits<double>::quiet_NaN());  // ignored
  EXPECT_EQ(registry.Render(),
            "# HELP clv_latency_seconds Latency.\n"
            "# TYPE clv_latency_seconds histogram\n"
            "clv_latency_seconds_bucket{le=\"0.005\"} 2\n"
            "clv_latency_seconds_bucket{le=\"0.1\"} 4\n"
            "clv_latency_seconds_bucket{le=\"1\"} 5\n"
            "clv_latency_seconds_bucket{le=\"+Inf\"} 7\n"
            "clv_latency_seconds_sum 102.656\n"
            "clv_latency_seconds_count 7\n");
}

TEST(MetricsRegistry, LabelledHistogramPutsLeLast) {
  MetricsRegistry registry;
  auto& family = registry.AddHistogramFamily("clv_size_bytes", "Sizes.", {"topic"}, {10});
  family.WithLabels({"orders"}).Observe(3);
  const std::string text = registry.Render();
  EXPECT_NE(text.find("clv_size_bytes_bucket{topic=\"orders\",le=\"10\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("clv_size_bytes_bucket{topic=\"orders\",le=\"+Inf\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("clv_size_bytes_sum{topic=\"orders\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("clv_size_bytes_count{topic=\"orders\"} 1\n"), std::string::npos) << text;
}

TEST(MetricsRegistry, SpecialGaugeValuesAreSpelledOut) {
  MetricsRegistry registry;
  registry.AddGauge("clv_a", "a").Set(std::numeric_limits<double>::infinity());
  registry.AddGauge("clv_b", "b").Set(-std::numeric_limits<double>::infinity());
  registry.AddGauge("clv_c", "c").Set(std::numeric_limits<double>::quiet_NaN());
  registry.AddGauge("clv_d", "d").Set(1e21);
  const std::string text = registry.Render();
  EXPECT_NE(text.find("clv_a +Inf\n"), std::string::npos);
  EXPECT_NE(text.find("clv_b -Inf\n"), std::string::npos);
  EXPECT_NE(text.find("clv_c NaN\n"), std::string::npos);
  EXPECT_NE(text.find("clv_d 1e+21\n"), std::string::npos) << text;
  std::map<std::string, std::string> types;
  EXPECT_EQ(ValidateExposition(text, &types), "");
}

TEST(MetricsRegistry, RejectsNamesThatBreakConventions) {
  MetricsRegistry registry;
  EXPECT_THROW(registry.AddCounter("clv_events", "counter without _total"), std::invalid_argument);
  EXPECT_THROW(registry.AddGauge("clv-dash", "bad char"), std::invalid_argument);
  EXPECT_THROW(registry.AddGauge("9lives", "leading digit"), std::invalid_argument);
  EXPECT_THROW(registry.AddGauge("", "empty"), std::invalid_argument);
  EXPECT_THROW(registry.AddGaugeFamily("clv_x", "reserved", {"__name"}), std::invalid_argument);
  EXPECT_THROW(registry.AddGaugeFamily("clv_y", "colon", {"a:b"}), std::invalid_argument);
  EXPECT_THROW(registry.AddGaugeFamily("clv_z", "twice", {"a", "a"}), std::invalid_argument);
  EXPECT_THROW(registry.AddHistogramFamily("clv_h", "le", {"le"}, {1}), std::invalid_argument);
  EXPECT_THROW(registry.AddHistogram("clv_h2", "order", {1, 1}), std::invalid_argument);
  EXPECT_THROW(registry.AddHistogram("clv_h3", "inf", {1, std::numeric_limits<double>::infinity()}),
               std::invalid_argument);
  registry.AddGauge("clv_once", "ok");
  EXPECT_THROW(registry.AddGauge("clv_once", "again"), std::invalid_argument);
  auto& family = registry.AddCounterFamily("clv_labelled_total", "two labels", {"a", "b"});
  EXPECT_THROW(family.WithLabels({"only one"}), std::invalid_argument);
  // Nothing half-registered leaks into the output.
  std::map<std::string, std::string> types;
  EXPECT_EQ(ValidateExposition(registry.Render(), &types), "");
  EXPECT_EQ(types.size(), 2u);
}

TEST(MetricsRegistry, RemoveAndClearDropSeriesAndHooksRunAtRender) {
  MetricsRegistry registry;
  auto& lag = registry.AddGaugeFamily("clv_lag_messages", "lag", {"topic", "partition"});
  lag.WithLabels({"orders", "0"}).Set(5);
  lag.WithLabels({"orders", "1"}).Set(6);
  lag.Remove({"orders", "0"});
  int hook_calls = 0;
  Gauge& users = registry.AddGauge("clv_users", "users");
  registry.AddCollectHook([&] { users.Set(++hook_calls * 10); });
  std::string text = registry.Render();
  EXPECT_EQ(text.find("partition=\"0\""), std::string::npos) << text;
  EXPECT_NE(text.find("clv_lag_messages{topic=\"orders\",partition=\"1\"} 6\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("clv_users 10\n"), std::string::npos) << text;
  lag.Clear();
  text = registry.Render();
  EXPECT_EQ(text.find("clv_lag_messages{"), std::string::npos) << text;
  EXPECT_NE(text.find("clv_users 20\n"), std::string::npos) << text;
  EXPECT_EQ(hook_calls, 2);
}

TEST(MetricsRegistry, ConcurrentUpdatesAreNotLostWhileRendering) {
  MetricsRegistry registry;
  auto& family = registry.AddCounterFamily("clv_hits_total", "hits", {"topic"});
  Histogram& histogram = registry.AddHistogram("clv_h_seconds", "h", {0.5});
  Gauge& gauge = registry.AddGauge("clv_g", "g");
  constexpr int kThreads = 4, kPerThread = 50000;
  std::atomic<bool> done = false;
  std::thread renderer([&] {
    while (!done) {
      std::map<std::string, std::string> types;
      const std::string problem = ValidateExposition(registry.Render(), &types);
      if (!problem.empty()) {
        ADD_FAILURE() << problem;
        return;
      }
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      Counter& counter = family.WithLabels({t % 2 ? "odd" : "even"});
      for (int i = 0; i < kPerThread; ++i) {
        counter.Inc();
        histogram.Observe(i % 2 ? 0.25 : 1.0);
        gauge.Add(1);
      }
    });
  }
  for (auto& writer : writers) writer.join();
  done = true;
  renderer.join();
  EXPECT_EQ(family.WithLabels({"even"}).value() + family.WithLabels({"odd"}).value(),
            1ull * kThreads * kPerThread);
  const auto snapshot = histogram.Collect();
  EXPECT_EQ(snapshot.count, 1ull * kThreads * kPerThread);
  EXPECT_EQ(snapshot.cumulative_counts[0], 1ull * kThreads * kPerThread / 2);
  EXPECT_DOUBLE_EQ(snapshot.sum, kThreads * kPerThread / 2 * 1.25);
  EXPECT_DOUBLE_EQ(gauge.value(), kThreads * kPerThread);
}

TEST(ServiceMetrics, ExposesEveryMetricOfIssue4UnderConventionalNames) {
  ServiceMetrics metrics;
  metrics.events_consumed.WithLabels({"orders"}).Inc(10);
  metrics.events_processed.WithLabels({"orders"}).Inc(8);
  metrics.events_dead_lettered.WithLabels({"orders"}).Inc(1);
  metrics.events_deduplicated.WithLabels({"orders"}).Inc(1);
  metrics.batch_events.Observe(10);
  metrics.batch_duration_seconds.Observe(0.003);
  metrics.event_to_score_seconds.Observe(0.004);
  metrics.consumer_lag.WithLabels({"orders", "3"}).Set(17);
  metrics.users_in_state.Set(5);
  metrics.state_disk_bytes.Set(4096);
  metrics.SetModelInfo("lstm", "v1");
  metrics.SetModelInfo("lstm", "v2");
  metrics.scorer_user_steps.Inc(8);
  metrics.scorer_user_steps_per_second.Set(800000);
  metrics.alerts_emitted.WithLabels({"churn_risk"}).Inc();
  metrics.scores_emitted.Inc(4);
  metrics.commits.Inc();
  metrics.commit_duration_seconds.Observe(0.001);
  metrics.ready.Set(1);
  const std::string text = metrics.registry.Render();
  std::map<std::string, std::string> types;
  ASSERT_EQ(ValidateExposition(text, &types), "") << text;
  const std::map<std::string, std::string> expected = {
      {"clv_events_consumed_total", "counter"},
      {"clv_events_processed_total", "counter"},
      {"clv_events_dead_lettered_total", "counter"},
      {"clv_events_deduplicated_total", "counter"},
      {"clv_batch_events", "histogram"},
      {"clv_batch_duration_seconds", "histogram"},
      {"clv_event_to_score_seconds", "histogram"},
      {"clv_consumer_lag_messages", "gauge"},
      {"clv_state_users", "gauge"},
      {"clv_state_disk_bytes", "gauge"},
      {"clv_model_info", "gauge"},
      {"clv_scorer_user_steps_total", "counter"},
      {"clv_scorer_user_steps_per_second", "gauge"},
      {"clv_scorer_nonfinite_total", "counter"},
      {"clv_scorer_state_resets_total", "counter"},
      {"clv_alerts_emitted_total", "counter"},
      {"clv_scores_emitted_total", "counter"},
      {"clv_commits_total", "counter"},
      {"clv_commit_duration_seconds", "histogram"},
      {"clv_ready", "gauge"},
      {"clv_start_time_seconds", "gauge"},
      {"clv_restore_records_total", "counter"},
      {"clv_restore_bytes_total", "counter"},
      {"clv_restore_seconds", "gauge"},
      {"clv_restore_partitions_restoring", "gauge"},
      {"clv_restore_skipped_events_total", "counter"},
      {"clv_partitions_assigned_total", "counter"},
      {"clv_partitions_revoked_total", "counter"}};
  EXPECT_EQ(types, expected);
  for (const char* line : {"clv_events_consumed_total{topic=\"orders\"} 10\n",
                           "clv_events_dead_lettered_total{topic=\"orders\"} 1\n",
                           "clv_consumer_lag_messages{topic=\"orders\",partition=\"3\"} 17\n",
                           "clv_model_info{scorer=\"lstm\",version=\"v2\"} 1\n",
                           "clv_alerts_emitted_total{kind=\"churn_risk\"} 1\n",
                           "clv_batch_events_bucket{le=\"10\"} 1\n", "clv_state_disk_bytes 4096\n",
                           "clv_commits_total 1\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << "missing: " << line << "\n" << text;
  }
  EXPECT_EQ(text.find("version=\"v1\""), std::string::npos) << "old model version still exported";
  EXPECT_GT(metrics.start_time_seconds.value(), 1.6e9);
}

TEST(RateMeter, RateOverTheWindow) {
  RateMeter meter(5000);
  EXPECT_EQ(meter.Update(0, 0), 0);
  EXPECT_DOUBLE_EQ(meter.Update(1000, 100), 100);
  EXPECT_DOUBLE_EQ(meter.Update(2000, 300), 150);
  // After the window only recent samples count: (1300 - 300) / 5 s.
  meter.Update(4000, 500);
  EXPECT_DOUBLE_EQ(meter.Update(7000, 1300), (1300.0 - 300) / 5);
}

TEST(ExponentialBuckets, GrowsByTheFactor) {
  EXPECT_EQ(ExponentialBuckets(0.5, 2, 4), (std::vector<double>{0.5, 1, 2, 4}));
  EXPECT_THROW(ExponentialBuckets(0, 2, 3), std::invalid_argument);
}

}  // namespace
}  // namespace clv::stream
