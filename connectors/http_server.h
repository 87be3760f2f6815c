// A small HTTP server for read APIs: it serves a route table (method, path
// pattern, handler) that its user declares next to the handlers (the
// service's routes are in stream/http_api.cpp).
//
// Contract:
//  * HTTP/1.1 (and 1.0) over plain TCP. One I/O thread multiplexes every
//    connection with epoll (non-blocking sockets, a buffer and a deadline per
//    connection), so idle or half-open connections cost memory, not threads;
//    a small fixed pool (HttpServerOptions::threads) runs the handlers.
//    Nothing runs on the caller's or the processing thread.
//  * Keep-alive by default for HTTP/1.1 (HTTP/1.0: only with
//    "Connection: keep-alive"); "Connection: close" is honoured and answered
//    with "Connection: close". Pipelined requests on one connection are all
//    answered, in order, one at a time. After keep_alive_max_requests
//    requests the last answer says "Connection: close".
//  * Framing: a request line and headers of at most kMaxHeaderBytes (8 KiB;
//    a longer request line is 414, longer headers 431). Content-Length must
//    be digits only and agree when repeated, else 400; a body over
//    max_body_bytes is 413; Transfer-Encoding is 501 (send Content-Length).
//    Bodies are read and dropped (handlers never see them). A framing error
//    answers and closes the connection (after draining what the client
//    still sends for up to a second, so the client sees the answer).
//  * Deadlines: a request (line, headers and body) must arrive within
//    read_timeout_ms of its first byte, or of the connection being accepted;
//    a keep-alive connection idle for keep_alive_timeout_ms is closed; an
//    answer that makes no progress for write_timeout_ms is dropped. At
//    max_connections open connections, accepting another closes the one
//    idle the longest (no handler running), so a flood of idle or
//    half-open connections (slowloris) cannot lock out a health check.
//  * Routing, in this order, for every request:
//      1. With a token configured, every request needs
//         `Authorization: Bearer <token>` (compared in constant time), else
//         401; except a route marked `open` (a static page carrying no data)
//         requested with its own method.
//      2. A method that no route serves at that path -> 405 with an Allow
//         header listing the methods that are served (HEAD is served by GET
//         routes); unless the path is served by no route at all and the
//         method is one the table serves, which gives 404.
//      3. A path no route matches -> 404 naming the path and the endpoints
//         (HttpRoute::help of each route).
//      4. The handler; an exception it throws -> 500 naming the path and
//         the exception's message; the server keeps serving.
//    Errors have the body {"error": "...", "status": N} (HttpResponse::Error).
//    Every answer carries Cache-Control: no-store and
//    X-Content-Type-Options: nosniff. An answer to a request with another
//    method than GET or HEAD closes the connection.
//  * Path patterns: "/top" matches that path exactly; "/users/{id}" matches
//    every path that starts with "/users/" and hands the raw rest (not
//    percent-decoded, maybe empty, maybe with '/') to the handler as
//    HttpRequest::capture. The query string is never part of the path; its
//    parameters are percent-decoded ('+' is a space).
//  * Bind to 127.0.0.1 (the default) or put a proxy in front.
//
// Thread-safety: handlers are called concurrently from the server's threads
// and must be thread-safe. Start/Stop/port may be called from any one owning
// thread. Stop() closes the port and every connection, waits for running
// handlers to return (their answers are not sent) and is idempotent; the
// destructor calls it.
//
// Example:
//   std::vector<HttpRoute> routes;
//   routes.push_back({.path = "/metrics", .help = "/metrics",
//                     .handler = [&](const HttpRequest&, HttpResponse* res) {
//                       res->Text(metrics.Render(), "text/plain; version=0.0.4");
//                     }});
//   std::unique_ptr<HttpServer> server;
//   auto status = HttpServer::Start({.bind = "127.0.0.1", .port = 8080}, routes, &server);
//   if (!status.ok()) { ... status.message names bind address and port ... }
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace clv::config {
struct HttpOptions;
}  // namespace clv::config

namespace clv::connectors {

struct HttpServerOptions {
  // Address to listen on. Default: loopback only.
  std::string bind = "127.0.0.1";
  // TCP port. 0 binds a free ephemeral port (tests); read it with port().
  // Note: in the service config http.port = 0 means "no HTTP server"; the
  // service then does not call Start() at all (see FromConfig).
  int port = 0;
  // Bearer token required on every request but GET /. Empty: no auth.
  std::string token = "";
  // Threads running handlers (connections are multiplexed on one more I/O
  // thread, so this bounds concurrent handlers, not connections).
  int threads = 4;
  // A request must arrive completely within this time of its first byte
  // (or of the connection being accepted). Default: 2 s.
  int read_timeout_ms = 2000;
  // An answer that makes no progress for this long is dropped.
  int write_timeout_ms = 2000;
  // Keep-alive: requests per connection, and idle time between them.
  int keep_alive_max_requests = 100;
  int keep_alive_timeout_ms = 5000;
  // Largest accepted request body (handlers never see bodies); larger: 413.
  int max_body_bytes = 4096;
  // Open connections at most; one more closes the longest-idle one.
  int max_connections = 512;
};

// Options for the service from config.http (every http.* option; the body
// limit keeps its default). Returns nullopt when config.http.port is 0 (server disabled).
std::optional<HttpServerOptions> FromConfig(const config::HttpOptions& http);

// One request as a handler sees it (valid during the handler call).
struct HttpRequest {
  std::string_view method;   // as sent ("HEAD" reaches GET routes)
  std::string_view path;     // raw path, without the query string
  std::string_view capture;  // raw rest of the path after a "{name}" pattern's prefix
  const std::multimap<std::string, std::string>* params = nullptr;  // decoded query

  // The query parameter `name` (the first when repeated), or nullptr.
  const std::string* param(const std::string& name) const {
    if (params == nullptr) return nullptr;
    auto it = params->find(name);
    return it == params->end() ? nullptr : &it->second;
  }
};

// What a handler answers. Defaults: 200 with an empty JSON body.
struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers

  void Json(std::string json) { Text(std::move(json), "application/json"); }
  void Text(std::string text, std::string type) {
    body = std::move(text);
    content_type = std::move(type);
  }
  // {"error": message, "status": status}; message is escaped into valid JSON.
  void Error(int error_status, std::string_view message);
};

using HttpHandler = std::function<void(const HttpRequest&, HttpResponse*)>;

struct HttpRoute {
  std::string method = "GET";
  // "/exact" or "/prefix/{name}" (see the contract above).
  std::string path;
  // Served without the bearer token (a static page that carries no data).
  bool open = false;
  // How the endpoint is listed in 404 answers ("/top?n=&by=clv|churn_risk").
  std::string help;
  HttpHandler handler;
};

// Request line plus headers, at most.
inline constexpr size_t kMaxHeaderBytes = 8192;

// Strict percent-decoding of a path segment ('+' stays '+'); false on a
// malformed escape.
bool PercentDecode(std::string_view raw, std::string* out);
// What of a request (paths, parameters) errors echo back: the first 120 bytes.
std::string_view ClipForError(std::string_view text);

class HttpServer {
 public:
  virtual ~HttpServer() = default;
  // Binds and starts serving on the server's own threads. Error (naming
  // bind:port and the reason) when the address cannot be bound, the options
  // are out of range, or a route is malformed (a path without a leading '/',
  // a "{" that is not a last "{name}" segment, no handler).
  static Status Start(const HttpServerOptions& options, std::vector<HttpRoute> routes,
                      std::unique_ptr<HttpServer>* server);
  // The bound port (the real one when options.port was 0).
  virtual int port() const = 0;
  // Stops accepting, finishes in-flight requests, joins the threads.
  virtual void Stop() = 0;
};

// The dashboard page (connectors/dashboard.html, embedded at build time).
std::string_view DashboardHtml();

}  // namespace clv::connectors
