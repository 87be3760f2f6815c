// clv train / clv eval: see models/trainer.h and models/evaluate.h.
//
//   clv train --events FILE... --out MODEL [--horizon 365d --min-horizon 30d --epochs N
//             --hidden N --batch-users N --bptt N --lr X --lr-decay X --patience N
//             --validation X --seed N --threads N --checkpoint FILE
//             --calibration-end DATE --init-from MODEL]
//   clv eval  --events FILE... --cutoff DATE [--horizon 273d] [--model MODEL]
//             [--baseline MODEL] [--truth FILE] [--json OUT] [--svg OUT] [--device D]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/model_commands.h"
#include "models/evaluate.h"
#include "models/trainer.h"

namespace clv::apps {

namespace {

struct TrainFlags {
  EventFileFlags events;
  std::string horizon;      // "" = model.horizon_days of the config, at most the data's span
  std::string min_horizon;  // "" = a tenth of the horizon
  std::string out;
  std::string calibration_end;
  std::string init_from;
  std::string shop_separator;
  int batch_users = 0;  // 0 = by the number of users (RunTrain)
  models::TrainOptions options;
};

struct EvalFlags {
  EventFileFlags events;
  std::string cutoff;
  std::string horizon = "273d";
  std::string model;
  std::string baseline;
  std::string truth;
  std::string json;
  std::string svg;
  std::string scores;
  std::string device = "cpu";
  std::string title;
};

// One line per epoch, drawn as a bar of the epoch budget.
void PrintProgress(const models::EpochReport& r, int max_epochs) {
  constexpr int kWidth = 20;
  int filled = max_epochs > 0 ? std::min(kWidth, r.epoch * kWidth / max_epochs) : kWidth;
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr,
               "[%s] epoch %d/%d  loss %.4f  val loss %.4f  val gini %.4f  lr %.2e  %.1fs%s\n",
               bar.c_str(), r.epoch, max_epochs, r.train_loss, r.validation_loss, r.validation_gini,
               r.learning_rate, r.seconds, r.improved ? "  *best*" : "");
}

// Synthetic ground truth (clv gen --truth, JSONL): user_id -> oracle and
// realized spend over the truth's horizon after the generated period. The
// oracle is oracle_expected_spend: the expected spend knowing each user's
// latent purchase rate, dropout probability and order value, weighted by
// P(alive | purchase history) -- the best ranking from the purchase record.
// `posterior` gets posterior_expected_spend where the file has it (the best
// any model can approach from the events; truth files before it lack it).
bool LoadTruth(const std::string& path, std::map<std::string, double>* expected,
               std::map<std::string, double>* realized, std::map<std::string, double>* posterior,
               std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "--truth " + path + ": cannot open";
    return false;
  }
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    auto json = nlohmann::json::parse(line, nullptr, false);
    if (json.is_discarded() || !json.is_object() || !json.contains("user_id") ||
        !json.contains("oracle_expected_spend") || !json.contains("realized_spend")) {
      *error =
          "--truth " + path + ":" + std::to_string(line_no) +
          ": not a clv gen truth line (JSON with user_id, oracle_expected_spend, realized_spend)";
      return false;
    }
    std::string user = json["user_id"].get<std::string>();
    (*expected)[user] = json["oracle_expected_spend"].get<double>();
    (*realized)[user] = json["realized_spend"].get<double>();
    if (json.contains("posterior_expected_spend")) {
      (*posterior)[user] = json["posterior_expected_spend"].get<double>();
    }
  }
  if (expected->empty()) {
    *error = "--truth " + path + ": no users";
    return false;
  }
  return true;
}

void RunTrain(TrainFlags& flags, const std::string& command, int* exit_code) {
  config::Config config;
  if (!LoadConfigOrReport(flags.events.config, &config)) {
    *exit_code = 2;
    return;
  }
  if (!flags.horizon.empty() && !ParseDurationDays(flags.horizon, &flags.options.horizon_days)) {
    std::fprintf(stderr, "clv train: --horizon '%s' is not a duration (e.g. 365d, 39w)\n",
                 flags.horizon.c_str());
    *exit_code = 2;
    return;
  }
  if (!flags.min_horizon.empty() &&
      !ParseDurationDays(flags.min_horizon, &flags.options.min_horizon_days)) {
    std::fprintf(stderr, "clv train: --min-horizon '%s' is not a duration (e.g. 30d, 4w)\n",
                 flags.min_horizon.c_str());
    *exit_code = 2;
    return;
  }
  int64_t calibration_end = 0;
  if (!flags.calibration_end.empty() && !ParseDateMs(flags.calibration_end, &calibration_end)) {
    std::fprintf(stderr, "clv train: --calibration-end '%s' is not a date (YYYY-MM-DD)\n",
                 flags.calibration_end.c_str());
    *exit_code = 2;
    return;
  }
  models::Dataset data;
  if (!LoadEvents(flags.events, config, &data)) {
    *exit_code = 1;
    return;
  }
  if (!data.has_order_values) {
    std::fprintf(stderr,
                 "clv train: no value column: the LSTM learns purchases (every order worth 1); "
                 "its clv is an expected number of purchases\n");
  }
  if (calibration_end != 0) {
    data = data.SliceBefore(calibration_end);
    std::fprintf(stderr, "training on events before %s: %s users\n", flags.calibration_end.c_str(),
                 WithThousands(data.users.size()).c_str());
  }
  // Horizons from the question the shop asks (model.horizon_days) and the
  // data's own span: a horizon longer than the data has no label to learn
  // from; the shortest horizon trained is a tenth of the longest, so every
  // tenure gets labelled examples.
  const double span_days = double(data.end_ms - data.start_ms) / models::kMsPerDay;
  if (flags.horizon.empty()) {
    const double asked = config.model.horizon_days > 0 ? config.model.horizon_days : 365.0;
    flags.options.horizon_days = std::max(1.0, std::min(asked, std::floor(span_days)));
  }
  if (flags.min_horizon.empty()) {
    flags.options.min_horizon_days = std::max(1.0, std::round(flags.options.horizon_days / 10));
    flags.options.min_horizon_days =
        std::min(flags.options.min_horizon_days, flags.options.horizon_days);
  }
  // Mini-batches: at least ~25 updates an epoch on a small shop (a power of
  // two <= users / 32), 256 users at most.
  if (flags.batch_users > 0) {
    flags.options.batch_users = flags.batch_users;
  } else {
    int batch = 8;
    while (batch < 256 && size_t(batch) * 2 * 32 <= data.users.size()) batch *= 2;
    flags.options.batch_users = batch;
  }
  if (!flags.init_from.empty()) {
    models::LstmModel init;
    std::string error;
    if (!models::LoadLstmModel(flags.init_from, &init, &error)) {
      std::fprintf(stderr, "clv train: --init-from: %s\n", error.c_str());
      *exit_code = 2;
      return;
    }
    flags.options.hidden_size = init.weights.hidden_size;
    flags.options.head_hidden = init.weights.head_hidden;
    flags.options.attr_vocab_size = init.weights.attr_count;
    flags.options.init_weights = init.weights;
    // The weights read money relative to the typical order: keep it so; the
    // prior is this shop's own fit (not portable unless --portable).
    flags.options.relative_money = init.prior.from_baseline || init.prior.money_unit != 1.0;
    std::fprintf(stderr, "fine-tuning %s (%s): hidden %d, head hidden %d\n",
                 flags.init_from.c_str(), init.version.c_str(), init.weights.hidden_size,
                 init.weights.head_hidden);
  }
  if (!flags.shop_separator.empty()) flags.options.shop_separator = flags.shop_separator[0];
  flags.options.command = command;
  std::string files;
  for (const auto& f : flags.events.files) files += (files.empty() ? "" : " ") + f;
  flags.options.data_description =
      files + (calibration_end ? " before " + flags.calibration_end : "");
  const int max_epochs = flags.options.epochs;
  std::fprintf(stderr,
               "training LSTM: horizons %.0f..%.0f days, hidden %d, up to %d epochs, %d users per "
               "batch, TBPTT %d events, %d thread(s)\n",
               flags.options.min_horizon_days > 0 ? flags.options.min_horizon_days
                                                  : flags.options.horizon_days,
               flags.options.horizon_days, flags.options.hidden_size, max_epochs,
               flags.options.batch_users, flags.options.bptt_steps, flags.options.threads);
  models::TrainResult result = models::TrainLstm(
      data, flags.options, [&](const models::EpochReport& r) { PrintProgress(r, max_epochs); });
  if (!result.ok()) {
    std::fprintf(stderr, "clv train: %s\n", result.error.c_str());
    *exit_code = 1;
    return;
  }
  std::string error;
  if (!models::SaveLstmModel(result.model, flags.out, &error)) {
    std::fprintf(stderr, "clv train: --out: %s\n", error.c_str());
    *exit_code = 1;
    return;
  }
  models::LstmModel saved;
  if (!models::LoadLstmModel(flags.out, &saved, &error)) {
    std::fprintf(stderr, "clv train: reading back --out: %s\n", error.c_str());
    *exit_code = 1;
    return;
  }
  const auto& best = result.epochs.at(result.best_epoch - 1);
  std::printf(
      "model %s written to %s\nbest epoch %d of %zu: validation loss %.4f, validation gini %.4f "
      "(%zu training users, %zu validation users, %zu labelled examples)\n",
      saved.version.c_str(), flags.out.c_str(), result.best_epoch, result.epochs.size(),
      best.validation_loss, best.validation_gini, result.train_users, result.validation_users,
      result.labelled_examples);
  *exit_code = 0;
}

void RunEval(EvalFlags& flags, int* exit_code) {
  config::Config config;
  if (!LoadConfigOrReport(flags.events.config, &config)) {
    *exit_code = 2;
    return;
  }
  models::EvalRunOptions options;
  if (!ParseDateMs(flags.cutoff, &options.cutoff_ms)) {
    std::fprintf(stderr, "clv eval: --cutoff '%s' is not a date (YYYY-MM-DD)\n",
                 flags.cutoff.c_str());
    *exit_code = 2;
    return;
  }
  if (!ParseDurationDays(flags.horizon, &options.horizon_days)) {
    std::fprintf(stderr, "clv eval: --horizon '%s' is not a duration (e.g. 273d, 39w)\n",
                 flags.horizon.c_str());
    *exit_code = 2;
    return;
  }
  std::string error;
  if (!flags.truth.empty() && !LoadTruth(flags.truth, &options.oracle, &options.actual,
                                         &options.events_posterior, &error)) {
    std::fprintf(stderr, "clv eval: %s\n", error.c_str());
    *exit_code = 2;
    return;
  }
  models::Dataset data;
  if (!LoadEvents(flags.events, config, &data)) {
    *exit_code = 1;
    return;
  }
  if (!flags.truth.empty() && data.end_ms > options.cutoff_ms + models::kMsPerDay) {
    std::fprintf(stderr,
                 "clv eval: --truth describes the horizon after the generated period, but the "
                 "events run to %s, past --cutoff %s; use the period's end as the cutoff\n",
                 models::MsToDate(data.end_ms - 1).c_str(), flags.cutoff.c_str());
    *exit_code = 2;
    return;
  }
  if (flags.truth.empty() &&
      data.end_ms < options.cutoff_ms + int64_t(options.horizon_days * models::kMsPerDay)) {
    std::fprintf(stderr,
                 "clv eval: warning: the events end on %s, before --cutoff + --horizon; %s "
                 "after the data's end count as 0\n",
                 models::MsToDate(data.end_ms - 1).c_str(),
                 data.has_order_values ? "spend and purchases" : "purchases");
  }
  options.lstm_model_path = flags.model;
  options.baseline_model_path = flags.baseline;
  options.device = flags.device;
  options.json_path = flags.json;
  options.svg_path = flags.svg;
  options.scores_path = flags.scores;
  options.title = flags.title;
  models::EvalReport report;
  std::fprintf(stderr, "scoring %s users at %s...\n", WithThousands(data.users.size()).c_str(),
               flags.cutoff.c_str());
  if (!models::RunEvaluation(data, options, &report, &error)) {
    std::fprintf(stderr, "clv eval: %s\n", error.c_str());
    *exit_code = 1;
    return;
  }
  std::printf("%s", models::EvalReportText(report).c_str());
  if (!flags.json.empty()) std::printf("JSON written to %s\n", flags.json.c_str());
  if (!flags.svg.empty()) std::printf("chart written to %s\n", flags.svg.c_str());
  if (!flags.scores.empty()) std::printf("per-user scores written to %s\n", flags.scores.c_str());
  *exit_code = 0;
}

}  // namespace

void AddTrainEvalCommands(CLI::App& root, int* exit_code) {
  auto* train = root.add_subcommand(
      "train", "Train the incremental LSTM scorer on an event log and write a model file");
  auto train_flags = std::make_shared<TrainFlags>();
  auto& t = *train_flags;
  AddEventFileFlags(*train, t.events);
  train->add_option("--horizon", t.horizon,
                    "Longest horizon trained and the model's default, e.g. 365d, 39w (default: "
                    "the config's model.horizon_days, at most the data's span)");
  train->add_option("--min-horizon", t.min_horizon,
                    "Shortest horizon trained (default: a tenth of --horizon); each example draws "
                    "its horizon log-uniformly from [--min-horizon, --horizon] where it fits, and "
                    "the model answers any horizon in that range");
  train->add_option("--init-from", t.init_from,
                    "Fine-tune: start from this model file's weights (e.g. the shipped "
                    "models/default/lstm.json) instead of random ones; the prior and the "
                    "feature normalization are fitted on these events");
  train->add_option("--out", t.out, "Model file to write (JSON)")->required();
  train->add_option("--calibration-end", t.calibration_end,
                    "Train only on events before this date (YYYY-MM-DD)");
  train->add_option("--epochs", t.options.epochs, "Most passes over the training users")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  train->add_option("--hidden", t.options.hidden_size, "LSTM hidden size")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  train->add_option("--head-hidden", t.options.head_hidden, "Head hidden layer size")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  train
      ->add_option("--batch-users", t.batch_users,
                   "Users per mini-batch (default: a power of two <= users / 32, at most 256)")
      ->check(CLI::Range(1, 1000000));
  train->add_option("--bptt", t.options.bptt_steps, "Truncated BPTT chunk, events")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  train
      ->add_option("--snapshots", t.options.snapshots_per_user,
                   "Rescore examples per user (times drawn uniformly over the user's life)")
      ->capture_default_str()
      ->check(CLI::Range(0, 10000));
  train
      ->add_option("--attr-vocab", t.options.attr_vocab_size,
                   "Profile key=value pairs the heads see as 0/1 inputs (the most frequent; "
                   "0 = ignore profile attributes; up to 16)")
      ->capture_default_str()
      ->check(CLI::Range(0, 16));
  train->add_option("--lr", t.options.learning_rate, "Adam learning rate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  train->add_option("--lr-decay", t.options.lr_decay, "Learning-rate multiplier per epoch")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  train
      ->add_option("--patience", t.options.patience,
                   "Stop after this many epochs without a better validation loss")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  train->add_flag("--select-by-gini", t.options.select_by_gini,
                  "Keep the epoch with the best validation Gini (ranking) instead of the best "
                  "validation loss");
  train
      ->add_option("--validation", t.options.validation_fraction,
                   "Share of users held out for validation")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 0.9));
  train->add_option("--seed", t.options.seed, "Random seed")->capture_default_str();
  train->add_option("--threads", t.options.threads, "torch threads while training")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  train->add_option("--checkpoint", t.options.checkpoint_path,
                    "Write the best model so far here after every improving epoch");
  train->add_flag("!--no-calibrate-total", t.options.calibrate_total,
                  "Do not scale the expected spend to the validation users' backtest total");
  train->add_flag("--portable", t.options.portable,
                  "A model for shops it was not trained on (the shipped one): money inputs "
                  "relative to the typical order value, and the scorer takes the BG/NBD + "
                  "Gamma-Gamma prior from the scored shop's baseline (model.baseline_path)");
  train
      ->add_option("--shop-separator", t.shop_separator,
                   "With --portable: user ids up to the first of this character name a shop "
                   "(\"shopA:u1\"), and each shop's users train on that shop's own fitted prior")
      ->needs("--portable")
      ->check([](const std::string& v) {
        return v.size() == 1 ? std::string() : std::string("one character, e.g. ':'");
      });
  train->callback([train_flags, exit_code, train] {
    // The command line as typed, recorded in the model file.
    std::string command = "clv train";
    for (const auto& opt : train->get_options()) {
      if (opt->count() == 0 || opt->get_name() == "--help") continue;
      if (opt->get_type_size_max() == 0) {  // a flag: no value
        command += " " + opt->get_name();
        continue;
      }
      for (const auto& value : opt->results()) command += " " + opt->get_name() + " " + value;
    }
    RunTrain(*train_flags, command, exit_code);
  });

  auto* eval = root.add_subcommand(
      "eval",
      "Score every user at a cutoff and compare LSTM, BG/NBD+GG, simple formula (and "
      "the oracle) with what they really spent");
  auto eval_flags = std::make_shared<EvalFlags>();
  auto& e = *eval_flags;
  AddEventFileFlags(*eval, e.events);
  eval->add_option("--cutoff", e.cutoff,
                   "Score at this date (YYYY-MM-DD); events before it are "
                   "history, spend after it is the truth")
      ->required();
  eval->add_option("--horizon", e.horizon, "Window after the cutoff, e.g. 273d, 39w")
      ->capture_default_str();
  eval->add_option("--model", e.model, "LSTM model file (default: the shipped model)");
  eval->add_option(
      "--baseline", e.baseline,
      "BG/NBD + Gamma-Gamma model file (default: fit on the events before the cutoff)");
  eval->add_option("--truth", e.truth,
                   "clv gen ground truth (JSONL): realized_spend is the actual, "
                   "oracle_expected_spend the oracle, posterior_expected_spend 'Bayes from the "
                   "events'; the cutoff must be the generated period's end");
  eval->add_option("--json", e.json, "Write the report as JSON");
  eval->add_option("--svg", e.svg, "Write the gain curve and decile calibration chart (SVG)");
  eval->add_option("--scores", e.scores,
                   "Write every user's actual and predicted spend per model (CSV)");
  eval->add_option("--device", e.device, "cpu | cuda | auto")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  eval->add_option("--title", e.title, "Title of the table and chart");
  eval->callback([eval_flags, exit_code] { RunEval(*eval_flags, exit_code); });
}

}  // namespace clv::apps
