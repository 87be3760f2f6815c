#include "models/chart.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>

namespace clv::models {

namespace {

constexpr std::array<const char*, 6> kColors = {"#1f77b4", "#d62728", "#2ca02c",
                                                "#9467bd", "#ff7f0e", "#8c564b"};

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

struct Panel {
  double left, top, width, height;
  double x_max, y_max;
  double X(double v) const { return left + width * v / x_max; }
  double Y(double v) const { return top + height * (1 - v / y_max); }
};

std::string Format(const char* pattern, double a, double b = 0, double c = 0, double d = 0) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer), pattern, a, b, c, d);
  return buffer;
}

std::string Axes(const Panel& p, const std::string& title, const std::string& x_label,
                 const std::string& y_label, int y_ticks, bool percent_y) {
  std::string svg;
  svg += Format(
      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
      "stroke=\"#999\"/>\n",
      p.left, p.top, p.width, p.height);
  for (int i = 0; i <= y_ticks; ++i) {
    double v = p.y_max * i / y_ticks;
    svg += Format("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n",
                  p.left, p.Y(v), p.left + p.width, p.Y(v));
    svg += Format("<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">", p.left - 4,
                  p.Y(v) + 4);
    svg += percent_y ? Format("%.0f%%", 100 * v) : Format("%.0f", v);
    svg += "</text>\n";
  }
  svg += Format(
             "<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" text-anchor=\"middle\" "
             "font-weight=\"bold\">",
             p.left + p.width / 2, p.top - 10) +
         Escape(title) + "</text>\n";
  svg += Format("<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">",
                p.left + p.width / 2, p.top + p.height + 34) +
         Escape(x_label) + "</text>\n";
  svg += Format(
             "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" "
             "transform=\"rotate(-90 %.1f %.1f)\">",
             p.left - 48, p.top + p.height / 2, p.left - 48, p.top + p.height / 2) +
         Escape(y_label) + "</text>\n";
  return svg;
}

std::string Polyline(const Panel& p, const std::vector<std::pair<double, double>>& points,
                     const char* color, const char* dash, double width = 2) {
  std::string svg = "<polyline fill=\"none\" stroke=\"" + std::string(color) +
                    "\" stroke-width=\"" + Format("%.1f", width) + "\"";
  if (dash[0] != '\0') svg += " stroke-dasharray=\"" + std::string(dash) + "\"";
  svg += " points=\"";
  for (const auto& [x, y] : points) svg += Format("%.1f,%.1f ", p.X(x), p.Y(y));
  svg += "\"/>\n";
  return svg;
}

}  // namespace

std::string EvalChartSvg(const EvalReport& report) {
  const double width = 1100, height = 470;
  std::string svg = Format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
      "height=\"%.0f\" font-family=\"sans-serif\">\n",
      width, height);
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += std::string("<text x=\"20\" y=\"22\" font-size=\"13\">clv eval: cutoff ") +
         Escape(MsToDate(report.cutoff_ms)) +
         Format(", horizon %.0f days, %.0f users</text>\n", report.horizon_days,
                double(report.population.size()));

  // Left: cumulative gain.
  Panel gain{80, 70, 400, 320, 1.0, 1.0};
  svg += Axes(gain, "Cumulative gain", "share of users, by predicted CLV (highest first)",
              report.order_values ? "share of actual spend" : "share of actual purchases", 5, true);
  svg += Polyline(gain, {{0, 0}, {1, 1}}, "#aaa", "4,4", 1);
  std::vector<std::pair<double, double>> perfect;
  for (const auto& g : report.perfect_gain) perfect.push_back({g.user_share, g.value_share});
  svg += Polyline(gain, perfect, "#000", "2,3", 1.5);
  for (size_t m = 0; m < report.models.size(); ++m) {
    std::vector<std::pair<double, double>> points;
    for (const auto& g : report.models[m].gain) points.push_back({g.user_share, g.value_share});
    svg += Polyline(gain, points, kColors[m % kColors.size()], "");
  }

  // Right: decile calibration.
  double y_max = 1;
  for (const auto& m : report.models) {
    for (const auto& row : m.metrics.deciles) {
      y_max = std::max({y_max, row.mean_predicted, row.mean_actual});
    }
  }
  double step = std::pow(10, std::floor(std::log10(y_max)));
  y_max = std::ceil(y_max / step) * step;
  Panel calibration{600, 70, 400, 320, 11.0, y_max};
  svg += Axes(calibration, "Decile calibration", "predicted decile (1 = highest predicted)",
              report.order_values ? "mean spend per user (solid actual, dashed predicted)"
                                  : "mean purchases per user (solid actual, dashed predicted)",
              5, false);
  for (int d = 1; d <= 10; ++d) {
    svg +=
        Format("<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%.0f</text>\n",
               calibration.X(d), calibration.top + calibration.height + 16, d);
  }
  for (size_t m = 0; m < report.models.size(); ++m) {
    std::vector<std::pair<double, double>> actual, predicted;
    for (const auto& row : report.models[m].metrics.deciles) {
      actual.push_back({double(row.decile), row.mean_actual});
      predicted.push_back({double(row.decile), row.mean_predicted});
    }
    const char* color = kColors[m % kColors.size()];
    svg += Polyline(calibration, actual, color, "");
    svg += Polyline(calibration, predicted, color, "6,4");
  }

  // Legend.
  double legend_y = 430;
  double x = 80;
  for (size_t m = 0; m < report.models.size(); ++m) {
    const auto& model = report.models[m];
    svg += Format("<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"4\" ", x, legend_y - 4) +
           "fill=\"" + kColors[m % kColors.size()] + "\"/>\n";
    std::string label = model.name + Format(" (Gini %.3f)", model.metrics.normalized_gini);
    svg += Format("<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">", x + 18, legend_y) +
           Escape(label) + "</text>\n";
    x += 30 + 7.0 * double(label.size());
  }
  svg +=
      Format("<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#555\">", 80.0, legend_y + 22) +
      "black dotted: perfect ranking; grey dashed: random</text>\n";
  svg += "</svg>\n";
  return svg;
}

bool WriteEvalChart(const EvalReport& report, const std::string& path, std::string* error) {
  std::ofstream out(path, std::ios::trunc);
  out << EvalChartSvg(report);
  if (!out) {
    *error = "eval chart: cannot write " + path;
    return false;
  }
  return true;
}

}  // namespace clv::models
