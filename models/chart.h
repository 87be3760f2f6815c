// SVG chart of an evaluation: cumulative gain curves (share of actual spend
// captured by the top x% of users by each model's prediction, with the
// perfect ranking and the random diagonal) and decile calibration (mean
// predicted vs mean actual spend per predicted decile, per model).
// Hand-written SVG, no dependencies; opens in any browser.
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "models/evaluate.h"

namespace clv::models {

std::string EvalChartSvg(const EvalReport& report);
// Writes EvalChartSvg(report) to path. False + *error naming the path.
bool WriteEvalChart(const EvalReport& report, const std::string& path, std::string* error);

}  // namespace clv::models
