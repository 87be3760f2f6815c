// HttpServer on cpp-httplib (Debian's compiled libcpp-httplib 0.11).
//
// All requests go through one pre-routing handler (Route) over our own route
// table instead of httplib's regex routes: libstdc++'s std::regex recurses per
// character and a long path could exhaust a worker's stack, and one function
// keeps the order of checks explicit: auth -> method -> path -> handler.
#include "connectors/http_server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>

#include <sys/socket.h>

#include "common/json_text.h"
#include "config/config.h"

namespace clv::connectors {
namespace {

constexpr const char* kJsonType = "application/json";

std::string ErrorJson(int status, std::string_view message) {
  std::string body = "{\"error\":";
  AppendJsonString(body, message);
  body += ",\"status\":";
  body += std::to_string(status);
  body += "}";
  return body;
}

void SetError(httplib::Response& res, int status, std::string_view message) {
  res.status = status;
  res.set_content(ErrorJson(status, message), kJsonType);
}

// Reasons for the statuses httplib answers by itself.
const char* Reason(int status) {
  switch (status) {
    case 400: return "malformed HTTP request";
    case 404: return "not found";
    case 413: return "request body too large";
    case 414: return "request target too long (over 8 KiB)";
    case 416: return "range not satisfiable";
    case 500: return "internal error";
    default: return "HTTP error";
  }
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

bool IEqualsAscii(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) {
             return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
           };
           return lower(x) == lower(y);
         });
}

// A route with its pattern split: `prefix` is the whole path of an exact
// route, or the part before "{name}" of a capturing one.
struct CompiledRoute {
  std::string method;
  std::string prefix;
  bool captures = false;
  bool open = false;
  HttpHandler handler;

  bool MatchesPath(std::string_view path) const {
    return captures ? path.starts_with(prefix) : path == prefix;
  }
  bool MatchesMethod(std::string_view request_method) const {
    return request_method == method || (method == "GET" && request_method == "HEAD");
  }
};

Status Compile(const std::vector<HttpRoute>& routes, std::vector<CompiledRoute>* compiled) {
  for (const HttpRoute& route : routes) {
    const std::string where = "http route " + route.method + " " + route.path;
    if (route.path.empty() || route.path.front() != '/') {
      return Status::Error(where + ": the path must start with '/'");
    }
    if (route.method.empty() || !route.handler) {
      return Status::Error(where + ": needs a method and a handler");
    }
    CompiledRoute entry{route.method, route.path, false, route.open, route.handler};
    const size_t brace = route.path.find('{');
    if (brace != std::string::npos) {
      const bool last_segment = route.path[brace - 1] == '/' && route.path.back() == '}' &&
                                route.path.find_first_of("{}/", brace + 1) == route.path.size() - 1;
      if (!last_segment || route.path.size() - brace < 3) {
        return Status::Error(where + ": a pattern may only end in one \"/{name}\" segment");
      }
      entry.prefix = route.path.substr(0, brace);
      entry.captures = true;
    }
    compiled->push_back(std::move(entry));
  }
  return Status::Ok();
}

// "GET, HEAD, POST": each method once, in table order; GET brings HEAD.
std::string AllowList(const std::vector<const CompiledRoute*>& routes) {
  std::vector<std::string> methods;
  auto add = [&](const std::string& method) {
    if (std::find(methods.begin(), methods.end(), method) == methods.end()) {
      methods.push_back(method);
    }
  };
  for (const CompiledRoute* route : routes) {
    add(route->method);
    if (route->method == "GET") add("HEAD");
  }
  std::string allow;
  for (const std::string& method : methods) allow += (allow.empty() ? "" : ", ") + method;
  return allow;
}

class HttpServerImpl final : public HttpServer {
 public:
  HttpServerImpl(const HttpServerOptions& options, std::vector<CompiledRoute> routes,
                 std::string endpoints)
      : options_(options), routes_(std::move(routes)), endpoints_(std::move(endpoints)) {}
  ~HttpServerImpl() override { Stop(); }

  Status Init() {
    const int threads = options_.threads;
    // httplib takes ownership of the returned queue and deletes it.
    server_.new_task_queue = [threads] {
      return std::make_unique<httplib::ThreadPool>(static_cast<size_t>(threads)).release();
    };
    server_.set_read_timeout(options_.read_timeout_ms / 1000,
                             (options_.read_timeout_ms % 1000) * 1000);
    server_.set_write_timeout(options_.write_timeout_ms / 1000,
                              (options_.write_timeout_ms % 1000) * 1000);
    server_.set_keep_alive_max_count(static_cast<size_t>(options_.keep_alive_max_requests));
    // httplib 0.11 takes whole seconds here.
    server_.set_keep_alive_timeout(std::max(1, (options_.keep_alive_timeout_ms + 999) / 1000));
    server_.set_payload_max_length(static_cast<size_t>(options_.max_body_bytes));
    // httplib's default also sets SO_REUSEPORT, which would let a second
    // instance silently share our port. Only SO_REUSEADDR (fast restarts).
    server_.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      RouteSafely(req, res);
      return httplib::Server::HandlerResponse::Handled;
    });
    // Errors httplib produces itself (bad request line 400, URI too long 414,
    // body too large 413) get a JSON body too; ours already have one.
    server_.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.body.empty()) {
        SetError(res, res.status, std::string("request rejected: ") + Reason(res.status));
      }
    });
    server_.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
          SetError(res, 500, "internal error while serving the request");
        });

    const std::string where = options_.bind + ":" + std::to_string(options_.port);
    if (options_.port == 0) {
      port_ = server_.bind_to_any_port(options_.bind);
      if (port_ < 0) return Status::Error("http: cannot bind " + where + " (any free port)");
    } else {
      if (!server_.bind_to_port(options_.bind, options_.port)) {
        return Status::Error("http: cannot bind " + where +
                             " (address in use, not a local address, or not permitted)");
      }
      port_ = options_.port;
    }
    listener_ = std::thread([this] {
      server_.listen_after_bind();
      listener_done_ = true;
    });
    // httplib's stop() is a no-op until the accept loop runs: wait for it so
    // that an early Stop() cannot leave the listener running forever.
    while (!server_.is_running() && !listener_done_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return Status::Ok();
  }

  int port() const override { return port_; }

  void Stop() override {
    if (stopped_.exchange(true)) return;
    server_.stop();
    if (listener_.joinable()) listener_.join();
  }

 private:
  void RouteSafely(const httplib::Request& req, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Content-Type-Options", "nosniff");
    const std::string_view target = req.target;
    const std::string_view raw_path = target.substr(0, target.find('?'));
    try {
      Route(req, raw_path, res);
    } catch (const std::exception& e) {
      SetError(res, 500,
               "internal error serving " + std::string(ClipForError(raw_path)) + ": " + e.what());
    } catch (...) {
      SetError(res, 500, "internal error serving " + std::string(ClipForError(raw_path)));
    }
  }

  void Route(const httplib::Request& req, std::string_view path, httplib::Response& res) {
    const std::string_view method = req.method;
    if (method != "GET" && method != "HEAD") {
      // The body (if any) was not read: do not reuse this connection.
      res.set_header("Connection", "close");
    }
    const CompiledRoute* route = nullptr;
    std::vector<const CompiledRoute*> at_path;
    bool method_served = false;
    for (const CompiledRoute& candidate : routes_) {
      method_served = method_served || candidate.MatchesMethod(method);
      if (!candidate.MatchesPath(path)) continue;
      at_path.push_back(&candidate);
      if (route == nullptr && candidate.MatchesMethod(method)) route = &candidate;
    }
    if (!options_.token.empty() && !(route != nullptr && route->open) && !Authorized(req)) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"clvstream\"");
      SetError(res, 401,
               req.has_header("Authorization") ? "invalid bearer token"
                                               : "missing 'Authorization: Bearer <token>' header");
      return;
    }
    if (route == nullptr && (!at_path.empty() || !method_served)) {
      std::vector<const CompiledRoute*> all;
      for (const CompiledRoute& candidate : routes_) all.push_back(&candidate);
      res.set_header("Allow", AllowList(at_path.empty() ? all : at_path));
      SetError(res, 405,
               "method " + std::string(ClipForError(method)) + " not allowed on " +
                   std::string(ClipForError(path)) +
                   "; allowed: " + AllowList(at_path.empty() ? all : at_path));
      return;
    }
    if (route == nullptr) {
      SetError(res, 404,
               "unknown path " + std::string(ClipForError(path)) + "; endpoints: " + endpoints_);
      return;
    }
    HttpRequest request;
    request.method = method;
    request.path = path;
    if (route->captures) request.capture = path.substr(route->prefix.size());
    request.params = &req.params;
    HttpResponse response;
    route->handler(request, &response);
    for (const auto& [name, value] : response.headers) res.set_header(name, value);
    res.status = response.status;
    res.set_content(response.body, response.content_type);
  }

  bool Authorized(const httplib::Request& req) const {
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kScheme = "Bearer ";
    if (header.size() < kScheme.size() ||
        !IEqualsAscii(std::string_view(header).substr(0, kScheme.size()), kScheme)) {
      return false;
    }
    return ConstantTimeEquals(std::string_view(header).substr(kScheme.size()), options_.token);
  }

  const HttpServerOptions options_;
  const std::vector<CompiledRoute> routes_;
  const std::string endpoints_;  // for 404 answers
  httplib::Server server_;
  std::thread listener_;
  int port_ = -1;
  std::atomic<bool> stopped_ = false;
  std::atomic<bool> listener_done_ = false;
};

}  // namespace

void HttpResponse::Error(int error_status, std::string_view message) {
  status = error_status;
  Json(ErrorJson(error_status, message));
}

// Shortens what we echo back from a request (paths, parameters) in errors.
std::string_view ClipForError(std::string_view text) { return text.substr(0, 120); }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Strict percent-decoding of a path segment ('+' stays '+'). False on a
// malformed escape.
bool PercentDecode(std::string_view raw, std::string* out) {
  out->clear();
  out->reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '%') {
      out->push_back(raw[i]);
      continue;
    }
    if (i + 2 >= raw.size()) return false;  // needs two hex digits after '%'
    const int high = HexValue(raw[i + 1]);
    const int low = HexValue(raw[i + 2]);
    if (high < 0 || low < 0) return false;
    out->push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return true;
}

std::optional<HttpServerOptions> FromConfig(const config::HttpOptions& http) {
  if (http.port == 0) return std::nullopt;
  HttpServerOptions options;
  options.bind = http.bind;
  options.port = http.port;
  options.token = http.token;
  return options;
}

Status HttpServer::Start(const HttpServerOptions& options, std::vector<HttpRoute> routes,
                         std::unique_ptr<HttpServer>* server) {
  const std::string where = options.bind + ":" + std::to_string(options.port);
  if (options.port < 0 || options.port > 65535) {
    return Status::Error("http: port must be 0..65535, got " + std::to_string(options.port));
  }
  if (options.threads < 1 || options.threads > 64) {
    return Status::Error("http " + where + ": threads must be 1..64, got " +
                         std::to_string(options.threads));
  }
  if (options.read_timeout_ms < 1 || options.write_timeout_ms < 1 ||
      options.keep_alive_timeout_ms < 1 || options.keep_alive_max_requests < 1 ||
      options.max_body_bytes < 0) {
    return Status::Error("http " + where +
                         ": timeouts and keep_alive_max_requests must be positive");
  }
  std::vector<CompiledRoute> compiled;
  Status status = Compile(routes, &compiled);
  if (!status.ok()) return status;
  std::string endpoints;
  for (const HttpRoute& route : routes) {
    if (route.help.empty()) continue;
    endpoints += endpoints.empty() ? route.method + " " : ", ";
    endpoints += route.help;
  }
  auto impl = std::make_unique<HttpServerImpl>(options, std::move(compiled), std::move(endpoints));
  status = impl->Init();
  if (!status.ok()) return status;
  *server = std::move(impl);
  return Status::Ok();
}

}  // namespace clv::connectors
