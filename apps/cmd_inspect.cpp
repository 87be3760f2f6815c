// clv inspect USER --state DIR: one user's stored state, from a stopped
// service's RocksDB directory (opened read-only).
// clv config: prints the effective configuration, or the generated docs.
#include <cstdio>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/common.h"
#include "state/state_store.h"
#include "stream/live_views.h"

namespace clv::apps {

namespace {

nlohmann::json StateToJson(const std::string& user_id, const state::UserState& s) {
  nlohmann::json attrs = nlohmann::json::object();
  for (const auto& [key, value] : s.attrs) attrs[key] = value;
  return {
      {"user_id", user_id},
      {"seq", s.seq},
      {"stage", state::StageName(s.stage)},
      {"clv", s.clv},
      {"p_purchase", s.p_purchase},
      {"churn_risk", s.churn_risk},
      {"score_ts_ms", s.score_ts_ms},
      {"next_timer_ms", s.next_timer_ms},
      {"partition", s.partition},
      {"aggregates", nlohmann::json::parse(stream::AggregatesJson(s.aggregates))},
      {"recent_event_ids", s.recent_event_ids.size()},
      {"model_state_floats", s.model_state.size()},
      {"model_state_fp16", s.fp16},
      {"attrs", attrs},
  };
}

}  // namespace

void AddInspectCommand(CLI::App& root, int* exit_code) {
  auto* cmd = root.add_subcommand("inspect", "Print one user's stored state (service stopped)");
  struct Flags {
    std::string user;
    std::string state_dir;
  };
  auto flags = std::make_shared<Flags>();
  cmd->add_option("user", flags->user, "User id")->required();
  cmd->add_option("--state", flags->state_dir, "RocksDB state directory of the service")
      ->required();
  cmd->callback([flags, exit_code] {
    config::StateOptions options;
    options.dir = flags->state_dir;
    std::unique_ptr<state::StateStore> store;
    auto status = state::OpenRocksDbStoreReadOnly(options, &store);
    if (!status.ok()) {
      std::fprintf(stderr, "clv inspect: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    std::optional<state::UserState> user;
    status = store->GetUser(flags->user, &user);
    if (!status.ok()) {
      std::fprintf(stderr, "clv inspect: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    if (!user) {
      std::fprintf(stderr, "clv inspect: no user '%s' in %s\n", flags->user.c_str(),
                   flags->state_dir.c_str());
      *exit_code = 3;
      return;
    }
    std::printf("%s\n", StateToJson(flags->user, *user).dump(2).c_str());
    *exit_code = 0;
  });
}

void AddConfigCommand(CLI::App& root, int* exit_code) {
  auto* cmd = root.add_subcommand(
      "config", "Print the effective configuration (or --markdown: the option docs)");
  auto flags = std::make_shared<ConfigFlags>();
  auto markdown = std::make_shared<bool>(false);
  AddConfigFlags(*cmd, *flags);
  cmd->add_flag("--markdown", *markdown,
                "Print docs/CONFIGURATION.md, generated from the option table");
  cmd->callback([flags, markdown, exit_code] {
    if (*markdown) {
      std::fputs(config::MarkdownTable().c_str(), stdout);
      *exit_code = 0;
      return;
    }
    config::Config config;
    if (!LoadConfigOrReport(*flags, &config)) {
      *exit_code = 2;
      return;
    }
    std::printf("%s\n", nlohmann::json::parse(config::ToJson(config)).dump(2).c_str());
    *exit_code = 0;
  });
}

}  // namespace clv::apps
