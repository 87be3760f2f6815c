// LoadScorer(): config::ModelOptions -> the configured Scorer.
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "config/config.h"
#include "models/baseline_scorer.h"
#include "models/scorer.h"

#if __has_include("models/lstm.h")
#include "models/lstm.h"
#define CLV_HAVE_LSTM_SCORER 1
#endif

namespace clv::models {

// The shipped baseline model: the source tree's models/default/ (builds run
// from the tree), else ../share/clvstream/ beside the executable (installed).
std::string DefaultBaselineModelPath() {
  std::error_code ignored;
  const std::filesystem::path in_tree =
      std::filesystem::path(CLV_MODELS_DEFAULT_DIR) / "baseline.json";
  if (std::filesystem::exists(in_tree, ignored)) return in_tree.string();
  const std::filesystem::path executable = std::filesystem::read_symlink("/proc/self/exe", ignored);
  if (!executable.empty()) {
    const auto installed =
        executable.parent_path() / ".." / "share" / "clvstream" / "baseline.json";
    if (std::filesystem::exists(installed, ignored)) return installed.lexically_normal().string();
  }
  return in_tree.string();  // missing: the load error names the expected place
}

std::unique_ptr<Scorer> LoadScorer(const config::ModelOptions& options, std::string* error) {
  if (options.scorer == "baseline") {
    if (!(options.horizon_days > 0)) {
      *error = "model.horizon_days must be > 0 (got " + std::to_string(options.horizon_days) + ")";
      return nullptr;
    }
    const std::string path = options.path.empty() ? DefaultBaselineModelPath() : options.path;
    BaselineModel model;
    std::string load_error;
    if (!LoadBaselineModel(path, &model, &load_error)) {
      *error = "model.path: " + load_error;
      return nullptr;
    }
    return std::make_unique<BaselineScorer>(std::move(model), options.horizon_days);
  }
  if (options.scorer == "lstm") {
#ifdef CLV_HAVE_LSTM_SCORER
    return LoadLstmScorer(options, error);
#else
    *error = "scorer 'lstm' is not built yet";
    return nullptr;
#endif
  }
  *error = "model.scorer: unknown scorer '" + options.scorer + "' (use \"baseline\" or \"lstm\")";
  return nullptr;
}

}  // namespace clv::models
