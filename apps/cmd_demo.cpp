// clv demo: the zero-setup main job. Embedded Kafka broker, a synthetic shop
// producing clickstream/order/profile events for ~10,000 users (with a few
// malformed messages and exact re-sends mixed in), the service consuming them,
// and a live view: events/s, lag, event-to-score latency, users per stage,
// dead letters, duplicates, the latest scores and alerts as they happen.
//
// By default the shop sends at a live pace (--rate 3000 events/s) for
// --duration 60 s: the shop's clock runs compressed (its days pass in
// seconds, so timers fire and users move through stages while you watch),
// and the latency shown is that of a service keeping up, in milliseconds.
// --rate 0 sends the whole history as fast as it can (the backlog mode: a
// throughput run, latency then measures the queue). Ends when every event
// sent is scored (or on Ctrl-C) with a summary.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/common.h"
#include "apps/shop_flags.h"
#include "common/time.h"
#include "stream/live_views.h"
#include "stream/metrics.h"
#include "stream/service.h"

namespace clv::apps {

namespace {

using Clock = std::chrono::steady_clock;

struct DemoFlags {
  ConfigFlags config;
  ShopFlags shop;
  std::string state_dir;
  double rate = 3000;    // events/s; 0 = as fast as it can (backlog mode)
  double duration = 60;  // seconds the shop sends at a live pace; 0 = all its days
  int bad_every = 5000;
  int duplicate_every = 2000;
  int show_scores = 3;
  int show_alerts = 3;
  bool http = false;
};

std::string ShortScore(const std::string& json) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded()) return json;
  char line[256];
  std::snprintf(
      line, sizeof line, "%-10s clv %9.2f  p_buy %.2f  churn %.2f  %-9s %-10s seq %llu (%s)",
      j.value("user_id", "").c_str(), j.value("clv", 0.0), j.value("p_purchase", 0.0),
      j.value("churn_risk", 0.0), j.value("stage", "").c_str(), j.value("segment", "").c_str(),
      static_cast<unsigned long long>(j.value("seq", uint64_t{0})), j.value("trigger", "").c_str());
  return line;
}

std::string ShortAlert(const nlohmann::json& alert) {
  char line[320];
  std::snprintf(line, sizeof line, "alert %-13s %-10s %s (clv %.2f, churn %.2f)",
                alert.value("kind", "").c_str(), alert.value("user_id", "").c_str(),
                alert.value("message", "").c_str(), alert.value("clv", 0.0),
                alert.value("churn_risk", 0.0));
  return line;
}

// Quantile q of the observations between two snapshots of one histogram, as
// the upper bound of its bucket (seconds; the last finite bound for +Inf);
// -1 when nothing was observed in between.
double QuantileBetween(const stream::Histogram::Snapshot& before,
                       const stream::Histogram::Snapshot& after, double q) {
  const uint64_t total = after.count - before.count;
  if (total == 0 || after.upper_bounds.empty()) return -1;
  const auto rank = static_cast<uint64_t>(q * static_cast<double>(total - 1)) + 1;
  for (size_t i = 0; i < after.upper_bounds.size(); ++i) {
    const uint64_t below = after.cumulative_counts[i] -
                           (i < before.cumulative_counts.size() ? before.cumulative_counts[i] : 0);
    if (below >= rank) return after.upper_bounds[i];
  }
  return after.upper_bounds.back();
}

std::string LatencyText(double seconds) {
  if (seconds < 0) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "<=%g ms", seconds * 1000);
  return text;
}

}  // namespace

void AddDemoCommand(CLI::App& root, int* exit_code) {
  auto* cmd = root.add_subcommand(
      "demo", "Embedded broker + synthetic shop + the service + a live view (no Kafka needed)");
  auto flags = std::make_shared<DemoFlags>();
  flags->shop.options.users = 10000;
  flags->shop.options.days = 120;
  AddConfigFlags(*cmd, flags->config);
  AddShopFlags(*cmd, flags->shop);
  cmd->add_option("--state", flags->state_dir,
                  "RocksDB directory (default: a fresh temporary one)");
  cmd->add_option("--rate", flags->rate,
                  "Events per second the shop sends (default 3000: a live pace, the shop's clock "
                  "compressed so its days pass in seconds; 0 = its whole history as fast as it "
                  "can, the backlog mode)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--duration", flags->duration,
                  "Seconds the shop sends at a live pace before the demo winds down (default 60; "
                  "0 = until its last day; not used with --rate 0)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--bad-every", flags->bad_every,
                  "Send a malformed message every N events (0 = never)");
  cmd->add_option("--duplicate-every", flags->duplicate_every,
                  "Re-send an event every N events (0 = never)");
  cmd->add_flag("--http", flags->http,
                "Serve the HTTP API and the live dashboard (port 8080 unless http.port is set) "
                "and keep serving after the demo until Ctrl-C");
  cmd->callback([flags, exit_code] {
    config::Config config;
    if (!LoadConfigOrReport(flags->config, &config) || !ResolveShopFlags(flags->shop, "clv demo")) {
      *exit_code = 2;
      return;
    }
    if (flags->http && config.http.port == 0) config.http.port = 8080;
    SetupLogging(config);
    LogEffectiveConfig(config, "demo");
    InstallStopSignals();
    std::filesystem::path temp_state;
    if (flags->state_dir.empty()) {
      temp_state =
          std::filesystem::temp_directory_path() / ("clv-demo-state-" + std::to_string(::getpid()));
      flags->state_dir = temp_state.string();
    }
    config.state.dir = flags->state_dir;
    if (config.kafka.input_topics.size() < 3) {
      std::fprintf(
          stderr,
          "clv demo: kafka.input_topics needs three topics (clickstream, orders, profiles)\n");
      *exit_code = 2;
      return;
    }
    // Each demo starts a new embedded broker: the offsets a kept --state
    // stored belong to the previous broker's logs (kafka.reset_offsets).
    if (config.kafka.bootstrap_servers.empty() && temp_state.empty() &&
        config.kafka.reset_offsets == "none") {
      config.kafka.reset_offsets = "earliest";
    }
    std::unique_ptr<connectors::EmbeddedBroker> broker;
    if (!EnsureBroker(&config, &broker)) {
      *exit_code = 1;
      return;
    }
    std::unique_ptr<stream::Service> service;
    auto status = stream::Service::Create(config, &service);
    if (!status.ok()) {
      std::fprintf(stderr, "clv demo: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    std::mutex scores_mutex;
    std::deque<std::string> latest_scores;
    service->set_score_observer([&](const stream::ScoreRecord& record) {
      std::lock_guard lock(scores_mutex);
      latest_scores.push_back(record.json);
      if (latest_scores.size() > 64) latest_scores.pop_front();
    });

    // The shop: a producer thread.
    std::unique_ptr<connectors::KafkaSink> producer;
    status = connectors::KafkaSink::Create(ClientOptionsFrom(config.kafka), &producer);
    if (!status.ok()) {
      std::fprintf(stderr, "clv demo: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    std::atomic<int64_t> produced{0};
    std::atomic<int64_t> shop_clock_ms{0};  // time of the latest event the shop sent
    std::atomic<bool> producer_done{false};
    // Set when the service's Run() returned (an error stops it early): the
    // shop stops sending and the live view stops waiting for the scores.
    std::atomic<bool> service_done{false};
    std::string producer_error;
    const auto& topics = config.kafka.input_topics;
    std::fprintf(stderr,
                 "clv demo: synthetic shop with %s users over %.0f days -> topics %s, %s, %s; "
                 "state in %s; model %s\n",
                 WithThousands(flags->shop.options.users).c_str(), flags->shop.options.days,
                 topics[0].c_str(), topics[1].c_str(), topics[2].c_str(), config.state.dir.c_str(),
                 service->processor().model_version().c_str());
    const bool live_pace = flags->rate > 0;
    if (live_pace) {
      std::string until =
          flags->duration > 0
              ? "for " + std::to_string(static_cast<int64_t>(flags->duration)) + " s (--duration)"
              : std::string("until the shop's last day");
      std::fprintf(stderr,
                   "clv demo: live pace, %s events/s %s on the shop's compressed clock; "
                   "--rate 0 sends the whole history as fast as it can\n",
                   WithThousands(static_cast<int64_t>(flags->rate)).c_str(), until.c_str());
    } else {
      std::fprintf(stderr,
                   "clv demo: backlog mode (--rate 0): the whole history as fast as it can\n");
    }
    if (service->http_port() != 0) {
      std::fprintf(
          stderr,
          "clv demo: dashboard at http://%s:%d/  (API: /top, /users/{id}, /metrics, /readyz)\n",
          config.http.bind == "0.0.0.0" ? "127.0.0.1" : config.http.bind.c_str(),
          service->http_port());
    }
    std::thread shop_thread([&] {
      sim::SyntheticShop shop(flags->shop.options);
      sim::GeneratedEvent event;
      auto started = Clock::now();
      const auto live_until =
          started + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(flags->duration > 0 ? flags->duration : 1e9));
      int64_t n = 0;
      while (!StopRequested() && !service_done.load() && shop.Next(&event)) {
        if (flags->rate > 0 && Clock::now() >= live_until) break;
        const std::string& topic = TopicForKind(event.kind, topics[0], topics[1], topics[2]);
        auto s = producer->Send(topic, event.user_id, event.json);
        if (s.ok() && flags->duplicate_every > 0 && n % flags->duplicate_every == 7) {
          s = producer->Send(topic, event.user_id, event.json);  // an exact re-send
          produced.fetch_add(1);
        }
        if (s.ok() && flags->bad_every > 0 && n % flags->bad_every == 11) {
          s = producer->Send(topics[0], event.user_id,
                             event.json.substr(0, event.json.size() / 2));  // truncated JSON
          produced.fetch_add(1);
        }
        if (!s.ok()) {
          producer_error = s.message;
          break;
        }
        produced.fetch_add(1);
        shop_clock_ms.store(event.ts_ms);
        ++n;
        if (flags->rate > 0 && n % 256 == 0) {
          auto due = started + std::chrono::duration<double>(n / flags->rate);
          std::this_thread::sleep_until(due);
        }
      }
      auto s = producer->Flush(60000);
      if (!s.ok() && producer_error.empty()) producer_error = s.message;
      producer_done.store(true);
    });

    std::atomic<bool> stop{false};
    connectors::Status run_status = connectors::Status::Ok();
    std::thread service_thread([&] {
      run_status = service->Run(stop);
      service_done.store(true);
    });

    auto started = Clock::now();
    int64_t last_consumed = 0;
    int64_t last_alerts = 0;
    auto last_latency = service->metrics().event_to_score_seconds.Collect();
    auto last_tick = started;
    while (!stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      auto p = service->progress();
      const auto& counters = service->processor().counters();
      int64_t consumed = counters.consumed.load();
      bool all_scored = producer_done.load() && consumed >= produced.load();
      if (StopRequested() || all_scored || !producer_error.empty() || service_done.load()) {
        stop.store(true);
      }
      auto now = Clock::now();
      double dt = std::chrono::duration<double>(now - last_tick).count();
      if (dt < 1.0 && !stop.load()) continue;
      double rate = (consumed - last_consumed) / std::max(dt, 1e-9);
      last_consumed = consumed;
      last_tick = now;
      double elapsed = std::chrono::duration<double>(now - started).count();
      const auto latency = service->metrics().event_to_score_seconds.Collect();
      const std::string p50 = LatencyText(QuantileBetween(last_latency, latency, 0.5));
      const std::string p99 = LatencyText(QuantileBetween(last_latency, latency, 0.99));
      last_latency = latency;
      const int64_t clock_ms = shop_clock_ms.load();
      std::fprintf(stderr,
                   "[%5.1fs] shop sent %s (clock %s) | scored %s events (%s/s) lag %s | "
                   "latency p50 %s p99 %s | scores %s alerts %s | dead-letter %s duplicates %s\n",
                   elapsed, WithThousands(produced.load()).c_str(),
                   clock_ms > 0 ? MsToDate(clock_ms).c_str() : "-", WithThousands(consumed).c_str(),
                   WithThousands(static_cast<int64_t>(rate)).c_str(), WithThousands(p.lag).c_str(),
                   p50.c_str(), p99.c_str(), WithThousands(counters.scores_emitted.load()).c_str(),
                   WithThousands(counters.alerts_emitted.load()).c_str(),
                   WithThousands(counters.dead_lettered.load()).c_str(),
                   WithThousands(counters.duplicates.load()).c_str());
      const auto stage_counts = service->live().Stages();
      std::string stage_line;
      for (size_t i = 0; i < stage_counts.size(); ++i) {
        stage_line += std::string(stage_line.empty() ? "" : ", ") +
                      state::StageName(static_cast<state::Stage>(i)) + " " +
                      WithThousands(stage_counts[i]);
      }
      std::fprintf(stderr, "          users %s: %s\n",
                   WithThousands(counters.users_seen.load()).c_str(), stage_line.c_str());
      // The alerts raised since the last line, newest first (at most show_alerts).
      const int64_t alerts_now = counters.alerts_emitted.load();
      const int64_t new_alerts = std::min<int64_t>(alerts_now - last_alerts, flags->show_alerts);
      last_alerts = alerts_now;
      if (new_alerts > 0) {
        auto alerts = nlohmann::json::parse(
            service->live().AlertsJson(static_cast<size_t>(new_alerts)), nullptr, false);
        if (alerts.is_array()) {
          for (const auto& alert : alerts) {
            std::fprintf(stderr, "          %s\n", ShortAlert(alert).c_str());
          }
        }
      }
      std::lock_guard lock(scores_mutex);
      for (int i = 0; i < flags->show_scores && i < static_cast<int>(latest_scores.size()); ++i) {
        std::fprintf(stderr, "          %s\n",
                     ShortScore(latest_scores[latest_scores.size() - 1 - i]).c_str());
      }
    }
    service_thread.join();
    shop_thread.join();
    if (!producer_error.empty()) {
      std::fprintf(stderr, "clv demo: the shop could not send: %s\n", producer_error.c_str());
      *exit_code = 1;
      return;
    }
    if (!run_status.ok()) {
      std::fprintf(stderr, "clv demo: the service stopped on error: %s\n",
                   run_status.message.c_str());
      *exit_code = 1;
      return;
    }
    // Summary from the committed state.
    std::map<std::string, int64_t> stages;
    std::vector<std::pair<double, std::string>> top;
    double total_clv = 0;
    int64_t users = 0;
    auto snapshot = service->store().Snapshot();
    auto scan = snapshot->ForEachUser([&](std::string_view id, const state::UserState& s) {
      ++stages[state::StageName(s.stage)];
      total_clv += s.clv;
      ++users;
      top.emplace_back(s.clv, std::string(id));
      return true;
    });
    const auto& c = service->processor().counters();
    double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
    std::fprintf(
        stdout,
        "\nclv demo: %s events scored in %.1fs (%s events/s end to end), %s users in state\n"
        "  dead-lettered %s, duplicates skipped %s, timer re-scores %s, alerts %s, commits %s\n"
        "  event-to-score latency p50 %.1f ms, p99 %.1f ms\n",
        WithThousands(c.consumed.load()).c_str(), elapsed,
        WithThousands(static_cast<int64_t>(c.consumed.load() / std::max(elapsed, 1e-9))).c_str(),
        WithThousands(users).c_str(), WithThousands(c.dead_lettered.load()).c_str(),
        WithThousands(c.duplicates.load()).c_str(), WithThousands(c.timer_rescores.load()).c_str(),
        WithThousands(c.alerts_emitted.load()).c_str(), WithThousands(c.commits.load()).c_str(),
        service->processor().latency().Quantile(0.5),
        service->processor().latency().Quantile(0.99));
    if (live_pace && shop_clock_ms.load() > 0) {
      std::fprintf(stdout, "  live pace %s events/s; the shop's clock reached %s\n",
                   WithThousands(static_cast<int64_t>(flags->rate)).c_str(),
                   MsToDate(shop_clock_ms.load()).c_str());
    }
    if (scan.ok() && users > 0) {
      std::fprintf(stdout, "  mean predicted CLV %.2f; users per stage:", total_clv / users);
      for (const auto& [stage, n] : stages)
        std::fprintf(stdout, " %s %s", stage.c_str(), WithThousands(n).c_str());
      std::sort(top.rbegin(), top.rend());
      std::fprintf(stdout, "\n  top users by CLV:");
      for (size_t i = 0; i < top.size() && i < 5; ++i) {
        std::fprintf(stdout, " %s (%.0f)", top[i].second.c_str(), top[i].first);
      }
      std::fprintf(stdout, "\n");
    }
    snapshot.reset();
    if (service->http_port() != 0 && !StopRequested()) {
      std::fprintf(stderr, "clv demo: done; the dashboard stays at http://%s:%d/ until Ctrl-C\n",
                   config.http.bind == "0.0.0.0" ? "127.0.0.1" : config.http.bind.c_str(),
                   service->http_port());
      while (!StopRequested()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    service.reset();
    if (!temp_state.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(temp_state, ignored);
    }
    *exit_code = 0;
  });
}

}  // namespace clv::apps
