// clv fit-baseline / train / eval: offline model work on event files, decoded
// by the same Decoder and field mapping as the stream.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "apps/commands.h"
#include "apps/common.h"
#include "apps/model_commands.h"
#include "models/baseline_scorer.h"
#include "stream/dataset_loader.h"

namespace clv::apps {

bool LoadEvents(const EventFileFlags& flags, const config::Config& config, models::Dataset* data) {
  stream::LoadStats stats;
  std::string error;
  std::fprintf(stderr, "loading %zu event file(s)...\n", flags.files.size());
  if (!stream::LoadDataset(flags.files, config, flags.format, flags.columns, data, &stats,
                           &error)) {
    std::fprintf(stderr, "clv: %s\n", error.c_str());
    return false;
  }
  if (!data->has_order_values) {
    std::fprintf(stderr,
                 "no value column (mapping.amount_field is empty): every purchase counts as 1, "
                 "so spend and clv are numbers of purchases\n");
  }
  std::fprintf(stderr,
               "loaded %s events of %s users (%s rows, %s rejected, %s duplicates) from %s to %s\n",
               WithThousands(stats.events).c_str(), WithThousands(data->users.size()).c_str(),
               WithThousands(stats.rows).c_str(), WithThousands(stats.rejected).c_str(),
               WithThousands(stats.duplicates).c_str(), models::MsToDate(data->start_ms).c_str(),
               models::MsToDate(data->end_ms - 1).c_str());
  for (const auto& e : stats.first_errors) std::fprintf(stderr, "  rejected: %s\n", e.c_str());
  return true;
}

void AddEventFileFlags(CLI::App& cmd, EventFileFlags& flags) {
  AddConfigFlags(cmd, flags.config);
  cmd.add_option("--events", flags.files, "Event files (JSONL, CSV, whitespace tables)")
      ->required();
  cmd.add_option("--format", flags.format, "auto | jsonl | csv | ws (whitespace table)")
      ->check(CLI::IsMember({"auto", "jsonl", "csv", "ws"}));
  cmd.add_option("--columns", flags.columns, "Column names for files without a header line")
      ->delimiter(',');
}

void AddModelCommands(CLI::App& root, int* exit_code) {
  auto* fit = root.add_subcommand(
      "fit-baseline", "Fit BG/NBD + Gamma-Gamma by maximum likelihood and write a model file");
  struct FitFlags {
    EventFileFlags events;
    std::string calibration_end;
    std::string out;
    double penalizer = models::FitOptions{}.penalizer;
  };
  auto fit_flags = std::make_shared<FitFlags>();
  AddEventFileFlags(*fit, fit_flags->events);
  fit->add_option("--calibration-end", fit_flags->calibration_end,
                  "Only events before this date (YYYY-MM-DD) are used; default: all");
  fit->add_option("--out", fit_flags->out, "Model file to write (JSON)")->required();
  fit->add_option("--penalizer", fit_flags->penalizer,
                  "L2 penalty on the log-parameters, used when the maximum-likelihood fit runs "
                  "to a boundary (0: keep the boundary fit)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  fit->callback([fit_flags, exit_code] {
    config::Config config;
    if (!LoadConfigOrReport(fit_flags->events.config, &config)) {
      *exit_code = 2;
      return;
    }
    models::Dataset data;
    if (!LoadEvents(fit_flags->events, config, &data)) {
      *exit_code = 1;
      return;
    }
    int64_t end_ms = data.end_ms;
    if (!fit_flags->calibration_end.empty() && !ParseDateMs(fit_flags->calibration_end, &end_ms)) {
      std::fprintf(stderr, "clv fit-baseline: --calibration-end '%s' is not a date (YYYY-MM-DD)\n",
                   fit_flags->calibration_end.c_str());
      *exit_code = 2;
      return;
    }
    models::BaselineModel model;
    std::string error;
    models::BaselineFitOptions options;
    options.created_by = "clv fit-baseline";
    options.optimizer.penalizer = fit_flags->penalizer;
    std::fprintf(stderr, "fitting BG/NBD%s on %s users...\n",
                 data.has_order_values ? " and Gamma-Gamma" : " (no value column: no Gamma-Gamma)",
                 WithThousands(data.users.size()).c_str());
    if (!models::FitBaseline(data, end_ms, &model, &error, options) ||
        !models::SaveBaselineModel(model, fit_flags->out, &error)) {
      std::fprintf(stderr, "clv fit-baseline: %s\n", error.c_str());
      *exit_code = 1;
      return;
    }
    if (model.fit.bgnbd_status != "ok") {
      std::fprintf(stderr, "clv fit-baseline: BG/NBD fit %s: %s\n", model.fit.bgnbd_status.c_str(),
                   model.fit.bgnbd_reason.c_str());
    }
    if (!data.has_order_values) {
      std::printf("Gamma-Gamma %s\n", models::kNoValueColumnReason);
    } else if (model.fit.gamma_gamma_status != "ok") {
      std::fprintf(stderr, "clv fit-baseline: Gamma-Gamma fit %s: %s\n",
                   model.fit.gamma_gamma_status.c_str(), model.fit.gamma_gamma_reason.c_str());
    }
    std::printf(
        "BG/NBD      r=%.4g alpha=%.4g a=%.4g b=%.4g  (customers %.0f, log-likelihood %.2f, %s)\n",
        model.bgnbd.r, model.bgnbd.alpha, model.bgnbd.a, model.bgnbd.b, model.fit.customers,
        model.fit.log_likelihood, model.fit.bgnbd_status.c_str());
    if (data.has_order_values) {
      std::printf(
          "Gamma-Gamma p=%.4g q=%.4g gamma=%.4g  (customers %.0f, log-likelihood %.2f, %s)\n",
          model.gamma_gamma.p, model.gamma_gamma.q, model.gamma_gamma.gamma,
          model.fit.gamma_gamma_customers, model.fit.gamma_gamma_log_likelihood,
          model.fit.gamma_gamma_status.c_str());
    } else {
      std::printf("Gamma-Gamma p=1 q=2 gamma=1  (none: every order worth 1)\n");
    }
    std::printf("model %s written to %s\n", model.Version().c_str(), fit_flags->out.c_str());
    *exit_code = 0;
  });
  AddTrainEvalCommands(root, exit_code);
}

}  // namespace clv::apps
