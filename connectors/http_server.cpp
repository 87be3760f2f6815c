// HttpServer on cpp-httplib (Debian's compiled libcpp-httplib 0.11).
//
// All requests go through one pre-routing handler (Route) instead of
// httplib's regex routes: libstdc++'s std::regex recurses per character and a
// long path could exhaust a worker's stack, and one function keeps the order
// of checks explicit: auth -> method -> path -> parameters -> handler.
#include "connectors/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>

#include "config/config.h"

namespace clv::connectors {
namespace {

constexpr size_t kMaxUserIdBytes = 256;
constexpr int kMaxTopN = 1000;
constexpr int kDefaultTopN = 100;
constexpr const char* kJsonType = "application/json";
constexpr const char* kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* kHtmlType = "text/html; charset=utf-8";
constexpr const char* kEndpoints =
    "GET /users/{id}, /top?n=&by=clv|churn_risk, /metrics, /healthz, /readyz, /api/summary, /";

// Appends `text` as a JSON string literal. Valid UTF-8 passes through; control
// characters are escaped; bytes that are not valid UTF-8 become U+FFFD, so the
// output is valid JSON whatever a client sent.
void AppendJsonString(std::string_view text, std::string* out) {
  out->push_back('"');
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      switch (byte) {
        case '"': *out += "\\\""; break;
        case '\\': *out += "\\\\"; break;
        case '\n': *out += "\\n"; break;
        case '\r': *out += "\\r"; break;
        case '\t': *out += "\\t"; break;
        default:
          if (byte < 0x20 || byte == 0x7f) {
            static constexpr char kHex[] = "0123456789abcdef";
            *out += "\\u00";
            out->push_back(kHex[byte >> 4]);
            out->push_back(kHex[byte & 0xf]);
          } else {
            out->push_back(static_cast<char>(byte));
          }
      }
      ++i;
      continue;
    }
    // Multi-byte UTF-8: lead byte gives the length; reject overlongs,
    // surrogates and code points above U+10FFFF.
    size_t length = 0;
    uint32_t code_point = 0;
    if ((byte & 0xe0) == 0xc0) {
      length = 2;
      code_point = byte & 0x1f;
    } else if ((byte & 0xf0) == 0xe0) {
      length = 3;
      code_point = byte & 0x0f;
    } else if ((byte & 0xf8) == 0xf0) {
      length = 4;
      code_point = byte & 0x07;
    }
    bool valid = length > 0 && i + length <= text.size();
    for (size_t k = 1; valid && k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xc0) == 0x80;
      code_point = (code_point << 6) | (next & 0x3f);
    }
    if (valid) {
      static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
      valid = code_point >= kMinForLength[length] && code_point <= 0x10ffff &&
              !(code_point >= 0xd800 && code_point <= 0xdfff);
    }
    if (valid) {
      out->append(text.substr(i, length));
      i += length;
    } else {
      *out += "\\ufffd";
      ++i;
    }
  }
  out->push_back('"');
}

std::string ErrorJson(int status, std::string_view message) {
  std::string body = "{\"error\":";
  AppendJsonString(message, &body);
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

// Shortens what we echo back from a request (paths, parameters) in errors.
std::string_view Clip(std::string_view text) { return text.substr(0, 120); }

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
           auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
           return lower(x) == lower(y);
         });
}

class HttpServerImpl final : public HttpServer {
 public:
  HttpServerImpl(const HttpServerOptions& options, HttpHandlers handlers)
      : options_(options), handlers_(std::move(handlers)) {}
  ~HttpServerImpl() override { Stop(); }

  Status Init() {
    const int threads = options_.threads;
    // httplib takes ownership of the returned queue and deletes it.
    server_.new_task_queue = [threads] {
      return std::make_unique<httplib::ThreadPool>(static_cast<size_t>(threads)).release();
    };
    server_.set_read_timeout(options_.read_timeout_ms / 1000, (options_.read_timeout_ms % 1000) * 1000);
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
      SetError(res, 500, "internal error serving " + std::string(Clip(raw_path)) + ": " + e.what());
    } catch (...) {
      SetError(res, 500, "internal error serving " + std::string(Clip(raw_path)));
    }
  }

  void Route(const httplib::Request& req, std::string_view path, httplib::Response& res) {
    const bool is_get = req.method == "GET" || req.method == "HEAD";
    if (!is_get) {
      // The body (if any) was not read: do not reuse this connection.
      res.set_header("Connection", "close");
    }
    const bool is_page = path == "/" || path == "/index.html";
    if (!options_.token.empty() && !(is_get && is_page) && !Authorized(req)) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"clvstream\"");
      SetError(res, 401,
               req.has_header("Authorization") ? "invalid bearer token"
                                               : "missing 'Authorization: Bearer <token>' header");
      return;
    }
    if (!is_get) {
      res.set_header("Allow", "GET, HEAD");
      SetError(res, 405, "method " + std::string(Clip(req.method)) + " not allowed on " +
                             std::string(Clip(path)) + "; this API is read-only (GET)");
      return;
    }
    if (is_page) {
      res.set_header("Content-Security-Policy",
                     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                     "connect-src 'self'; img-src data:");
      res.set_content(std::string(DashboardHtml()), kHtmlType);
      return;
    }
    if (path == "/healthz") {
      res.set_content("{\"status\":\"ok\"}", kJsonType);
      return;
    }
    if (path == "/readyz") {
      const bool ready = handlers_.ready && handlers_.ready();
      std::string detail = handlers_.ready_detail ? handlers_.ready_detail() : std::string();
      if (detail.empty()) detail = ready ? "{\"ready\":true}" : "{\"ready\":false}";
      res.status = ready ? 200 : 503;
      res.set_content(detail, kJsonType);
      return;
    }
    if (path == "/metrics") {
      if (!Available(handlers_.metrics_text, "metrics", res)) return;
      res.set_content(handlers_.metrics_text(), kMetricsType);
      return;
    }
    if (path == "/api/summary") {
      if (!Available(handlers_.summary_json, "summary", res)) return;
      res.set_content(handlers_.summary_json(), kJsonType);
      return;
    }
    if (path == "/top") {
      ServeTop(req, res);
      return;
    }
    constexpr std::string_view kUsersPrefix = "/users/";
    if (path.starts_with(kUsersPrefix)) {
      ServeUser(path.substr(kUsersPrefix.size()), res);
      return;
    }
    SetError(res, 404, "unknown path " + std::string(Clip(path)) + "; endpoints: " + kEndpoints);
  }

  void ServeUser(std::string_view raw_id, httplib::Response& res) {
    std::string user_id;
    if (!PercentDecode(raw_id, &user_id)) {
      SetError(res, 400, "user id: malformed percent-encoding in '" + std::string(Clip(raw_id)) + "'");
      return;
    }
    if (user_id.empty() || user_id.size() > kMaxUserIdBytes) {
      SetError(res, 400, "user id: must be 1.." + std::to_string(kMaxUserIdBytes) +
                             " bytes after URL-decoding, got " + std::to_string(user_id.size()));
      return;
    }
    if (std::any_of(user_id.begin(), user_id.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
      SetError(res, 400, "user id: control characters are not allowed");
      return;
    }
    if (!Available(handlers_.user_json, "user lookup", res)) return;
    std::optional<std::string> json = handlers_.user_json(user_id);
    if (!json) {
      SetError(res, 404, "unknown user '" + std::string(Clip(user_id)) + "'");
      return;
    }
    res.set_content(*json, kJsonType);
  }

  void ServeTop(const httplib::Request& req, httplib::Response& res) {
    int n = kDefaultTopN;
    if (req.has_param("n")) {
      const std::string text = req.get_param_value("n");
      int value = 0;
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
      const bool digits_only = !text.empty() && text.size() <= 7 &&
                               std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits_only || error != std::errc() || end != text.data() + text.size() || value < 1 ||
          value > kMaxTopN) {
        SetError(res, 400, "parameter n: must be an integer in 1.." + std::to_string(kMaxTopN) + ", got '" +
                               std::string(Clip(text)) + "'");
        return;
      }
      n = value;
    }
    std::string by = "clv";
    if (req.has_param("by")) {
      by = req.get_param_value("by");
      if (by != "clv" && by != "churn_risk") {
        SetError(res, 400, "parameter by: must be 'clv' or 'churn_risk', got '" + std::string(Clip(by)) + "'");
        return;
      }
    }
    if (!Available(handlers_.top_json, "top users", res)) return;
    res.set_content(handlers_.top_json(n, by), kJsonType);
  }

  template <class Function>
  static bool Available(const Function& function, std::string_view what, httplib::Response& res) {
    if (function) return true;
    SetError(res, 503, std::string(what) + " not available (the service has not provided it)");
    return false;
  }

  bool Authorized(const httplib::Request& req) const {
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kScheme = "Bearer ";
    if (header.size() < kScheme.size() || !IEqualsAscii(std::string_view(header).substr(0, kScheme.size()), kScheme)) {
      return false;
    }
    return ConstantTimeEquals(std::string_view(header).substr(kScheme.size()), options_.token);
  }

  const HttpServerOptions options_;
  const HttpHandlers handlers_;
  httplib::Server server_;
  std::thread listener_;
  int port_ = -1;
  std::atomic<bool> stopped_ = false;
  std::atomic<bool> listener_done_ = false;
};

}  // namespace

std::optional<HttpServerOptions> FromConfig(const config::HttpOptions& http) {
  if (http.port == 0) return std::nullopt;
  HttpServerOptions options;
  options.bind = http.bind;
  options.port = http.port;
  options.token = http.token;
  return options;
}

Status HttpServer::Start(const HttpServerOptions& options, HttpHandlers handlers,
                         std::unique_ptr<HttpServer>* server) {
  const std::string where = options.bind + ":" + std::to_string(options.port);
  if (options.port < 0 || options.port > 65535) {
    return Status::Error("http: port must be 0..65535, got " + std::to_string(options.port));
  }
  if (options.threads < 1 || options.threads > 64) {
    return Status::Error("http " + where + ": threads must be 1..64, got " + std::to_string(options.threads));
  }
  if (options.read_timeout_ms < 1 || options.write_timeout_ms < 1 || options.keep_alive_timeout_ms < 1 ||
      options.keep_alive_max_requests < 1 || options.max_body_bytes < 0) {
    return Status::Error("http " + where + ": timeouts and keep_alive_max_requests must be positive");
  }
  auto impl = std::make_unique<HttpServerImpl>(options, std::move(handlers));
  Status status = impl->Init();
  if (!status.ok()) return status;
  *server = std::move(impl);
  return Status::Ok();
}

}  // namespace clv::connectors
