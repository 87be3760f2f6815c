#include "models/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/baseline_scorer.h"
#include "models/chart.h"
#include "models/lstm.h"

namespace clv::models {

std::vector<size_t> EvalPopulation(const Dataset& data, int64_t cutoff_ms) {
  std::vector<size_t> population;
  for (size_t i = 0; i < data.users.size(); ++i) {
    const auto& events = data.users[i].events;
    if (!events.empty() && events.front().ts_ms < cutoff_ms) population.push_back(i);
  }
  return population;
}

std::vector<double> ScoreAtCutoff(Scorer& scorer, const Dataset& data,
                                  const std::vector<size_t>& population, int64_t cutoff_ms,
                                  int batch_users, size_t* state_resets) {
  std::vector<double> result(population.size(), 0.0);
  const int state_size = scorer.state_size();
  batch_users = std::max(1, batch_users);
  for (size_t begin = 0; begin < population.size(); begin += batch_users) {
    const size_t end = std::min(population.size(), begin + size_t(batch_users));
    const size_t n = end - begin;
    std::vector<History> histories(n), befores(n);
    std::vector<float> states(n * std::max(1, state_size), 0.0f);
    std::vector<size_t> counts(n);
    size_t rounds = 0;
    for (size_t j = 0; j < n; ++j) {
      if (state_size > 0) scorer.InitState(&states[j * state_size]);
      const auto& events = data.users[population[begin + j]].events;
      auto stop = std::lower_bound(events.begin(), events.end(), cutoff_ms,
                                   [](const StepEvent& e, int64_t t) { return e.ts_ms < t; });
      counts[j] = static_cast<size_t>(stop - events.begin());
      rounds = std::max(rounds, counts[j]);
    }
    std::vector<StepInput> inputs;
    std::vector<Score> scores;
    for (size_t k = 0; k < rounds; ++k) {
      inputs.clear();
      for (size_t j = 0; j < n; ++j) {
        if (k >= counts[j]) continue;
        const StepEvent& event = data.users[population[begin + j]].events[k];
        befores[j] = histories[j];
        UpdateHistory(histories[j], event);
        inputs.push_back({&befores[j], &histories[j], event,
                          state_size > 0 ? &states[j * state_size] : nullptr});
      }
      scores.resize(inputs.size());
      scorer.Step(inputs, scores);
      for (const StepInput& input : inputs) {
        if (input.state == nullptr || std::all_of(input.state, input.state + state_size,
                                                  [](float v) { return std::isfinite(v); })) {
          continue;
        }
        scorer.InitState(input.state);
        if (state_resets != nullptr) ++*state_resets;
      }
    }
    std::vector<RescoreInput> rescore(n);
    for (size_t j = 0; j < n; ++j) {
      rescore[j] = {&histories[j], cutoff_ms, state_size > 0 ? &states[j * state_size] : nullptr};
    }
    scores.resize(n);
    scorer.Rescore(rescore, scores);
    for (size_t j = 0; j < n; ++j) result[begin + j] = scores[j].clv;
  }
  return result;
}

EvalReport Evaluate(const Dataset& data, int64_t cutoff_ms, double horizon_days,
                    std::vector<EvalCandidate> candidates, const std::string& title,
                    const std::vector<double>* actual_by_user) {
  EvalReport report;
  report.cutoff_ms = cutoff_ms;
  report.horizon_days = horizon_days;
  report.title = title;
  report.order_values = data.has_order_values;
  report.population = EvalPopulation(data, cutoff_ms);
  const int64_t horizon_ms = static_cast<int64_t>(horizon_days * double(kMsPerDay));
  auto outcomes = ActualInWindow(data, cutoff_ms, horizon_ms);
  for (size_t index : report.population) {
    const double observed = data.has_order_values ? outcomes[index].spend
                                                  : static_cast<double>(outcomes[index].purchases);
    report.actual.push_back(actual_by_user != nullptr && index < actual_by_user->size()
                                ? (*actual_by_user)[index]
                                : observed);
  }
  report.perfect_gain = GainCurve(report.actual, report.actual);
  for (auto& candidate : candidates) {
    EvalModelResult model;
    model.name = candidate.name;
    if (candidate.scorer != nullptr) {
      model.predicted = ScoreAtCutoff(*candidate.scorer, data, report.population, cutoff_ms,
                                      /*batch_users=*/8192, &model.state_resets);
    } else if (candidate.formula) {
      for (size_t index : report.population) {
        History history;
        for (const auto& event : data.users[index].events) {
          if (event.ts_ms >= cutoff_ms) break;
          UpdateHistory(history, event);
        }
        model.predicted.push_back(candidate.formula(history, cutoff_ms));
      }
    } else {
      for (size_t index : report.population) {
        model.predicted.push_back(index < candidate.given.size() ? candidate.given[index] : 0.0);
      }
    }
    // A non-finite prediction is a defect of the candidate: it counts as 0
    // everywhere (metrics, gain curve, CSV) and is reported.
    size_t non_finite = 0;
    for (double& v : model.predicted) {
      if (!std::isfinite(v)) {
        v = 0;
        ++non_finite;
      }
    }
    model.metrics = ComputeMetrics(model.predicted, report.actual);
    model.metrics.non_finite_predictions = non_finite;
    model.gain = GainCurve(model.predicted, report.actual);
    report.models.push_back(std::move(model));
  }
  return report;
}

namespace {

// printf of one number, or "n/a" (same width) when it is undefined/non-finite.
std::string Cell(const char* format, int width, double value) {
  char text[64];
  if (IsDefined(value)) {
    std::snprintf(text, sizeof(text), format, value);
  } else {
    std::snprintf(text, sizeof(text), "%*s", width, "n/a");
  }
  return text;
}

}  // namespace

std::string EvalReportText(const EvalReport& report) {
  std::string out;
  char line[512];
  if (!report.title.empty()) out += report.title + "\n";
  std::snprintf(line, sizeof(line), "cutoff %s, horizon %.0f days, %zu users, actual %s %.2f\n",
                MsToDate(report.cutoff_ms).c_str(), report.horizon_days, report.population.size(),
                report.order_values ? "spend" : "purchases",
                report.models.empty() ? 0.0 : report.models[0].metrics.total_actual);
  out += line;
  if (!report.order_values) {
    out +=
        "no value column (mapping.amount_field is empty): judged on purchases, every model's "
        "expected number of purchases in the horizon vs the actual number; no spend metrics "
        "(Gamma-Gamma not fitted)\n";
  }
  out += "\n";
  std::snprintf(line, sizeof(line), "%-22s %10s %9s %8s %8s %8s %8s %8s %8s %8s %12s\n", "model",
                "MSE", "MAE", "R2", "MAPE*", "Gini(n)", "Spearman", "Top10 P", "Top10 R",
                "Top10 F1", "sum pred");
  out += line;
  std::string notes;
  for (const auto& m : report.models) {
    const Metrics& x = m.metrics;
    std::snprintf(line, sizeof(line), "%-22s ", m.name.c_str());
    out += line;
    out += Cell("%10.2f", 10, x.mse) + " " + Cell("%9.3f", 9, x.mae) + " " +
           Cell("%8.4f", 8, x.r2) + " " + Cell("%8.3f", 8, x.mape_buyers) + " " +
           Cell("%8.4f", 8, x.normalized_gini) + " " + Cell("%8.4f", 8, x.spearman) + " " +
           Cell("%8.3f", 8, x.top_decile_precision) + " " + Cell("%8.3f", 8, x.top_decile_recall) +
           " " + Cell("%8.3f", 8, x.top_decile_f1) + " " + Cell("%12.1f", 12, x.total_predicted) +
           "\n";
    if (x.non_finite_predictions > 0) {
      std::snprintf(line, sizeof(line), "note: %s: %zu non-finite predictions counted as 0\n",
                    m.name.c_str(), x.non_finite_predictions);
      notes += line;
    }
    if (m.state_resets > 0) {
      std::snprintf(line, sizeof(line),
                    "note: %s: %zu non-finite model states reset to the initial state (as the "
                    "service does)\n",
                    m.name.c_str(), m.state_resets);
      notes += line;
    }
  }
  out += notes;
  out +=
      "(*MAPE over buyers only)\n\nDecile calibration (mean predicted / mean actual, decile 1 = "
      "highest predicted)\n";
  std::snprintf(line, sizeof(line), "%-22s", "decile");
  out += line;
  for (int d = 1; d <= 10; ++d) {
    std::snprintf(line, sizeof(line), " %15d", d);
    out += line;
  }
  out += "\n";
  for (const auto& m : report.models) {
    std::snprintf(line, sizeof(line), "%-22s", m.name.c_str());
    out += line;
    for (const auto& row : m.metrics.deciles) {
      const std::string predicted = Cell("%7.1f", 7, row.mean_predicted);
      std::string actual = Cell("%.1f", 0, row.mean_actual);
      std::snprintf(line, sizeof(line), " %s/%-7s", predicted.c_str(), actual.c_str());
      out += line;
    }
    out += "\n";
  }
  return out;
}

namespace {
// A metric as JSON: null when undefined (NaN) or not finite.
nlohmann::json Number(double value) {
  return IsDefined(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
}

nlohmann::json GainJson(const std::vector<GainPoint>& gain) {
  nlohmann::json points = nlohmann::json::array();
  for (const auto& p : gain) points.push_back({Number(p.user_share), Number(p.value_share)});
  return points;
}
}  // namespace

std::string EvalReportJson(const EvalReport& report) {
  nlohmann::json json;
  json["title"] = report.title;
  json["cutoff"] = MsToDate(report.cutoff_ms);
  json["cutoff_ms"] = report.cutoff_ms;
  json["horizon_days"] = report.horizon_days;
  json["users"] = report.population.size();
  // What actual and predicted count: "spend" (money) or "purchases" (data
  // without a value column).
  json["target"] = report.order_values ? "spend" : "purchases";
  json["value_column"] = report.order_values;
  json["perfect_gain"] = GainJson(report.perfect_gain);
  nlohmann::json models = nlohmann::json::array();
  for (const auto& m : report.models) {
    const Metrics& x = m.metrics;
    nlohmann::json deciles = nlohmann::json::array();
    for (const auto& row : x.deciles) {
      deciles.push_back({{"decile", row.decile},
                         {"users", row.users},
                         {"mean_predicted", Number(row.mean_predicted)},
                         {"mean_actual", Number(row.mean_actual)}});
    }
    models.push_back({{"name", m.name},
                      {"users", x.users},
                      {"buyers", x.buyers},
                      {"mse", Number(x.mse)},
                      {"mae", Number(x.mae)},
                      {"r2", Number(x.r2)},
                      {"mape_buyers", Number(x.mape_buyers)},
                      {"gini", Number(x.gini)},
                      {"normalized_gini", Number(x.normalized_gini)},
                      {"spearman", Number(x.spearman)},
                      {"top_decile_precision", Number(x.top_decile_precision)},
                      {"top_decile_recall", Number(x.top_decile_recall)},
                      {"top_decile_f1", Number(x.top_decile_f1)},
                      {"total_predicted", Number(x.total_predicted)},
                      {"total_actual", Number(x.total_actual)},
                      {"non_finite_predictions", x.non_finite_predictions},
                      {"model_state_resets", m.state_resets},
                      {"deciles", deciles},
                      {"gain", GainJson(m.gain)}});
  }
  json["models"] = models;
  return json.dump(2);
}

std::string EvalScoresCsv(const Dataset& data, const EvalReport& report) {
  auto quoted = [](const std::string& text) {
    std::string out = "\"";
    for (char c : text) {
      if (c == '"') out += '"';
      out += c;
    }
    return out + "\"";
  };
  std::string csv = "user_id,actual";
  for (const auto& model : report.models) csv += "," + quoted(model.name);
  csv += '\n';
  char number[32];
  for (size_t row = 0; row < report.population.size(); ++row) {
    csv += quoted(data.users[report.population[row]].user_id);
    std::snprintf(number, sizeof(number), ",%.6g", report.actual[row]);
    csv += number;
    for (const auto& model : report.models) {
      std::snprintf(number, sizeof(number), ",%.6g", model.predicted[row]);
      csv += number;
    }
    csv += '\n';
  }
  return csv;
}

bool RunEvaluation(const Dataset& data, const EvalRunOptions& options, EvalReport* report,
                   std::string* error) {
  if (!(options.horizon_days > 0)) {
    *error = "eval: horizon_days must be > 0";
    return false;
  }
  LstmModel lstm_model;
  std::string path =
      options.lstm_model_path.empty() ? DefaultLstmModelPath() : options.lstm_model_path;
  if (!LoadLstmModel(path, &lstm_model, error)) return false;

  BaselineModel baseline_model;
  if (options.baseline_model_path.empty()) {
    if (!FitBaseline(data, options.cutoff_ms, &baseline_model, error)) {
      *error = "eval: fitting BG/NBD + Gamma-Gamma before the cutoff: " + *error;
      return false;
    }
  } else if (!LoadBaselineModel(options.baseline_model_path, &baseline_model, error)) {
    return false;
  }
  BaselineScorer baseline(baseline_model, options.horizon_days);
  // A portable LSTM (the shipped one) sits on the baseline it is compared
  // with, as it sits on model.baseline_path in the service.
  UseBaselinePrior(&lstm_model, baseline_model.bgnbd, baseline_model.gamma_gamma);

  LstmScorerOptions lstm_options;
  lstm_options.device = options.device;
  lstm_options.top_factors = false;
  lstm_options.horizon_days = options.horizon_days;
  auto lstm = MakeLstmScorer(lstm_model, lstm_options, error);
  if (!lstm) return false;

  std::vector<EvalCandidate> candidates;
  char lstm_name[64];
  std::snprintf(lstm_name, sizeof(lstm_name), "LSTM %s", lstm_model.version.c_str());
  candidates.push_back({lstm_name, lstm.get(), {}, {}});
  candidates.push_back(
      {data.has_order_values ? "BG/NBD + Gamma-Gamma" : "BG/NBD", &baseline, {}, {}});
  candidates.push_back({"simple formula",
                        nullptr,
                        [&](const History& h, int64_t now) { return baseline.SimpleClvAt(h, now); },
                        {}});
  // Given values per user (synthetic truth), 0 for users the map lacks.
  auto add_given = [&](const char* name, const std::map<std::string, double>& by_user) {
    if (by_user.empty()) return;
    EvalCandidate given;
    given.name = name;
    for (const auto& user : data.users) {
      auto it = by_user.find(user.user_id);
      given.given.push_back(it != by_user.end() ? it->second : 0.0);
    }
    candidates.push_back(std::move(given));
  };
  add_given("oracle (true expected)", options.oracle);
  add_given("Bayes from the events", options.events_posterior);
  std::string title = options.title;
  if (options.horizon_days > lstm_model.horizon_days * 1.001 ||
      options.horizon_days < lstm_model.min_horizon_days * 0.999) {
    char note[200];
    std::snprintf(note, sizeof(note),
                  "%snote: LSTM trained for horizons of %.0f..%.0f days, asked for %.0f days "
                  "(extrapolated)",
                  title.empty() ? "" : "\n", lstm_model.min_horizon_days, lstm_model.horizon_days,
                  options.horizon_days);
    title += note;
  }
  std::vector<double> actual_by_user;
  if (!options.actual.empty()) {
    for (const auto& user : data.users) {
      auto it = options.actual.find(user.user_id);
      actual_by_user.push_back(it != options.actual.end() ? it->second : 0.0);
    }
  }
  *report = Evaluate(data, options.cutoff_ms, options.horizon_days, std::move(candidates), title,
                     options.actual.empty() ? nullptr : &actual_by_user);
  if (!options.json_path.empty()) {
    std::ofstream out(options.json_path, std::ios::trunc);
    out << EvalReportJson(*report) << '\n';
    if (!out) {
      *error = "eval: cannot write " + options.json_path;
      return false;
    }
  }
  if (!options.svg_path.empty() && !WriteEvalChart(*report, options.svg_path, error)) return false;
  if (!options.scores_path.empty()) {
    std::ofstream out(options.scores_path, std::ios::trunc);
    out << EvalScoresCsv(data, *report);
    if (!out) {
      *error = "eval: cannot write " + options.scores_path;
      return false;
    }
  }
  return true;
}

}  // namespace clv::models
