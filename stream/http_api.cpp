#include "stream/http_api.h"

#include <algorithm>
#include <charconv>
#include <memory>
#include <utility>

#include "common/user_id.h"

namespace clv::stream {
namespace {

using connectors::ClipForError;
using connectors::HttpRequest;
using connectors::HttpResponse;
using connectors::HttpRoute;

constexpr int kMaxTopN = 1000;
constexpr int kDefaultTopN = 100;
constexpr const char* kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* kHtmlType = "text/html; charset=utf-8";

template <class Function>
bool Available(const Function& function, std::string_view what, HttpResponse* res) {
  if (function) return true;
  res->Error(503, std::string(what) + " not available (the service has not provided it)");
  return false;
}

void ServeUser(const ApiHandlers& handlers, std::string_view raw_id, HttpResponse* res) {
  std::string user_id;
  if (!connectors::PercentDecode(raw_id, &user_id)) {
    res->Error(
        400, "user id: malformed percent-encoding in '" + std::string(ClipForError(raw_id)) + "'");
    return;
  }
  // The stream's own rule (common/user_id.h): every id it accepts is readable here.
  if (std::string why = UserIdProblem(user_id); !why.empty()) {
    res->Error(400, "user id (after URL-decoding): " + why);
    return;
  }
  if (!Available(handlers.user_json, "user lookup", res)) return;
  UserAnswer answer = handlers.user_json(user_id);
  if (answer.status == UserAnswer::kUnknown) {
    res->Error(404, "unknown user '" + std::string(ClipForError(user_id)) + "'");
    return;
  }
  res->status = answer.status;
  res->Json(std::move(answer.json));
}

void ServeTop(const ApiHandlers& handlers, const HttpRequest& req, HttpResponse* res) {
  int n = kDefaultTopN;
  if (const std::string* text = req.param("n")) {
    int value = 0;
    const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
    const bool digits_only =
        !text->empty() && text->size() <= 7 &&
        std::all_of(text->begin(), text->end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits_only || error != std::errc() || end != text->data() + text->size() || value < 1 ||
        value > kMaxTopN) {
      res->Error(400, "parameter n: must be an integer in 1.." + std::to_string(kMaxTopN) +
                          ", got '" + std::string(ClipForError(*text)) + "'");
      return;
    }
    n = value;
  }
  std::string by = "clv";
  if (const std::string* text = req.param("by")) {
    by = *text;
    if (by != "clv" && by != "churn_risk") {
      res->Error(400, "parameter by: must be 'clv' or 'churn_risk', got '" +
                          std::string(ClipForError(by)) + "'");
      return;
    }
  }
  bool group = false;
  if (const std::string* text = req.param("scope")) {
    if (*text != "local" && *text != "group") {
      res->Error(400, "parameter scope: must be 'local' or 'group', got '" +
                          std::string(ClipForError(*text)) + "'");
      return;
    }
    group = *text == "group";
  }
  if (!Available(handlers.top_json, "top users", res)) return;
  res->Json(handlers.top_json(n, by, group));
}

void ServeReady(const ApiHandlers& handlers, HttpResponse* res) {
  const bool ready = handlers.ready && handlers.ready();
  std::string detail = handlers.ready_detail ? handlers.ready_detail() : std::string();
  if (detail.empty()) detail = ready ? "{\"ready\":true}" : "{\"ready\":false}";
  res->status = ready ? 200 : 503;
  res->Json(std::move(detail));
}

void ServePage(HttpResponse* res) {
  res->headers.emplace_back("Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; "
                            "style-src 'unsafe-inline'; connect-src 'self'; img-src data:");
  res->Text(std::string(connectors::DashboardHtml()), kHtmlType);
}

}  // namespace

std::vector<HttpRoute> ApiRoutes(ApiHandlers handlers) {
  // Shared by every route's handler, which may outlive this call.
  auto h = std::make_shared<const ApiHandlers>(std::move(handlers));
  std::vector<HttpRoute> routes;
  auto add = [&](std::string path, std::string help, connectors::HttpHandler handler) {
    HttpRoute route;
    route.path = std::move(path);
    route.help = std::move(help);
    route.handler = std::move(handler);
    routes.push_back(std::move(route));
  };
  add("/users/{id}", "/users/{id}",
      [h](const HttpRequest& req, HttpResponse* res) { ServeUser(*h, req.capture, res); });
  add("/top", "/top?n=&by=clv|churn_risk&scope=local|group",
      [h](const HttpRequest& req, HttpResponse* res) { ServeTop(*h, req, res); });
  add("/metrics", "/metrics", [h](const HttpRequest&, HttpResponse* res) {
    if (Available(h->metrics_text, "metrics", res)) res->Text(h->metrics_text(), kMetricsType);
  });
  add("/healthz", "/healthz",
      [](const HttpRequest&, HttpResponse* res) { res->Json("{\"status\":\"ok\"}"); });
  add("/readyz", "/readyz", [h](const HttpRequest&, HttpResponse* res) { ServeReady(*h, res); });
  add("/api/summary", "/api/summary", [h](const HttpRequest&, HttpResponse* res) {
    if (Available(h->summary_json, "summary", res)) res->Json(h->summary_json());
  });
  add("/", "/", [](const HttpRequest&, HttpResponse* res) { ServePage(res); });
  add("/index.html", "", [](const HttpRequest&, HttpResponse* res) { ServePage(res); });
  routes[routes.size() - 2].open = true;
  routes.back().open = true;
  return routes;
}

}  // namespace clv::stream
