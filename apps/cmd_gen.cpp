// clv gen: synthetic shop events (JSONL file, stdout, or straight to Kafka)
// with each user's ground truth written alongside.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>

#include "apps/commands.h"
#include "apps/common.h"
#include "apps/shop_flags.h"

namespace clv::apps {

void AddShopFlags(CLI::App& cmd, ShopFlags& flags) {
  auto& o = flags.options;
  cmd.add_option("--users", o.users, "Number of users")
      ->check(CLI::Range(int64_t{1}, int64_t{100000000}));
  cmd.add_option("--days", o.days, "Length of the generated period, days")
      ->check(CLI::Range(1.0, 3650.0));
  cmd.add_option("--seed", o.seed, "Random seed (same seed, same bytes)");
  cmd.add_option("--start", flags.start,
                 "First day of the period, YYYY-MM-DD (default 2025-01-01)");
  cmd.add_option("--horizon", flags.horizon, "Ground-truth horizon after the period, e.g. 365d");
  std::string names;
  for (const auto& name : sim::ShopProfileNames()) names += (names.empty() ? "" : "|") + name;
  cmd.add_option(
      "--profile", flags.profile,
      "Shop profile(s), comma-separated, later ones win: " + names + " (sim/synthetic_shop.h)");
}

bool ResolveShopFlags(ShopFlags& flags, const char* command) {
  if (!flags.profile.empty()) {
    auto error = sim::ApplyShopProfiles(flags.profile, &flags.options);
    if (!error.empty()) {
      std::fprintf(stderr, "%s: --profile: %s\n", command, error.c_str());
      return false;
    }
  }
  if (!flags.start.empty() && !ParseDateMs(flags.start, &flags.options.start_ms)) {
    std::fprintf(stderr, "%s: --start '%s' is not a date (YYYY-MM-DD)\n", command,
                 flags.start.c_str());
    return false;
  }
  if (!flags.horizon.empty() && !ParseDurationDays(flags.horizon, &flags.options.horizon_days)) {
    std::fprintf(stderr, "%s: --horizon '%s' is not a duration (e.g. 365d, 52w)\n", command,
                 flags.horizon.c_str());
    return false;
  }
  auto error = sim::ValidateShopOptions(flags.options);
  if (!error.empty()) {
    std::fprintf(stderr, "%s: %s\n", command, error.c_str());
    return false;
  }
  return true;
}

const std::string& TopicForKind(EventKind kind, const std::string& clickstream,
                                const std::string& orders, const std::string& profiles) {
  switch (kind) {
    case EventKind::kPurchase:
    case EventKind::kRefund: return orders;
    case EventKind::kProfile: return profiles;
    default: return clickstream;
  }
}

void AddGenCommand(CLI::App& root, int* exit_code) {
  auto* cmd = root.add_subcommand(
      "gen", "Generate synthetic shop events with known ground truth (JSONL or to a topic)");
  struct Flags {
    ShopFlags shop;
    std::string out;
    std::string truth;
    std::string topic;
    std::string bootstrap;
    bool split = false;
  };
  auto flags = std::make_shared<Flags>();
  AddShopFlags(*cmd, flags->shop);
  cmd->add_option("--out", flags->out, "Events file (JSONL); '-' for stdout");
  cmd->add_option("--truth", flags->truth, "Ground truth per user (.csv for CSV, else JSONL)");
  cmd->add_option("--topic", flags->topic, "Produce to this topic instead of a file");
  cmd->add_option("--bootstrap", flags->bootstrap,
                  "Kafka bootstrap servers for --topic/--split-topics");
  cmd->add_flag(
      "--split-topics", flags->split,
      "Produce orders/refunds to 'orders', profiles to 'profiles', the rest to 'clickstream'");
  cmd->callback([flags, exit_code] {
    if (!ResolveShopFlags(flags->shop, "clv gen")) {
      *exit_code = 2;
      return;
    }
    const bool to_kafka = !flags->topic.empty() || flags->split;
    if (to_kafka == !flags->out.empty()) {
      std::fprintf(
          stderr, "clv gen: give either --out FILE or --topic/--split-topics (with --bootstrap)\n");
      *exit_code = 2;
      return;
    }
    std::unique_ptr<connectors::KafkaSink> sink;
    if (to_kafka) {
      if (flags->bootstrap.empty()) {
        std::fprintf(stderr, "clv gen: --topic needs --bootstrap HOST:PORT\n");
        *exit_code = 2;
        return;
      }
      connectors::ClientOptions client;
      client.bootstrap_servers = flags->bootstrap;
      auto status = connectors::KafkaSink::Create(client, &sink);
      if (!status.ok()) {
        std::fprintf(stderr, "clv gen: %s\n", status.message.c_str());
        *exit_code = 1;
        return;
      }
    }
    std::ofstream file;
    std::ostream* out = &std::cout;
    if (!to_kafka && flags->out != "-") {
      file.open(flags->out, std::ios::binary);
      if (!file) {
        std::fprintf(stderr, "clv gen: cannot write %s\n", flags->out.c_str());
        *exit_code = 1;
        return;
      }
      out = &file;
    }
    sim::SyntheticShop shop(flags->shop.options);
    sim::GeneratedEvent event;
    const std::string clickstream = "clickstream", orders = "orders", profiles = "profiles";
    auto started = std::chrono::steady_clock::now();
    auto last_report = started;
    int64_t count = 0;
    while (shop.Next(&event)) {
      if (to_kafka) {
        const std::string& topic =
            flags->split ? TopicForKind(event.kind, clickstream, orders, profiles) : flags->topic;
        auto status = sink->Send(topic, event.user_id, event.json);
        if (!status.ok()) {
          std::fprintf(stderr, "clv gen: %s\n", status.message.c_str());
          *exit_code = 1;
          return;
        }
      } else {
        out->write(event.json.data(), static_cast<std::streamsize>(event.json.size()));
        out->put('\n');
      }
      ++count;
      if ((count & 0xFFF) == 0) {
        auto now = std::chrono::steady_clock::now();
        if (now - last_report > std::chrono::seconds(1)) {
          last_report = now;
          double fraction = static_cast<double>(event.ts_ms - flags->shop.options.start_ms) /
                            (shop.end_ms() - flags->shop.options.start_ms);
          std::fprintf(stderr, "\rclv gen: %s events, %.0f%% of the period",
                       WithThousands(count).c_str(), 100 * fraction);
        }
      }
    }
    if (sink) {
      auto status = sink->Flush(60000);
      if (!status.ok()) {
        std::fprintf(stderr, "clv gen: %s\n", status.message.c_str());
        *exit_code = 1;
        return;
      }
    }
    out->flush();
    if (!*out) {
      std::fprintf(stderr, "clv gen: write error on %s\n", flags->out.c_str());
      *exit_code = 1;
      return;
    }
    if (!flags->truth.empty()) {
      std::ofstream truth_file(flags->truth, std::ios::binary);
      auto truth = shop.Truth();
      bool csv = flags->truth.size() > 4 && flags->truth.substr(flags->truth.size() - 4) == ".csv";
      bool ok = truth_file && (csv ? sim::WriteTruthCsv(truth, truth_file)
                                   : sim::WriteTruthJsonl(truth, truth_file));
      if (!ok) {
        std::fprintf(stderr, "clv gen: cannot write %s\n", flags->truth.c_str());
        *exit_code = 1;
        return;
      }
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::fprintf(stderr, "\rclv gen: %s events of %s users in %.1fs (%s/s)%s\n",
                 WithThousands(count).c_str(), WithThousands(flags->shop.options.users).c_str(),
                 seconds,
                 WithThousands(static_cast<int64_t>(count / std::max(seconds, 1e-9))).c_str(),
                 flags->truth.empty() ? "" : (", truth in " + flags->truth).c_str());
    *exit_code = 0;
  });
}

}  // namespace clv::apps
