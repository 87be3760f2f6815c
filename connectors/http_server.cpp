// HttpServer: one epoll I/O thread for every connection, a small pool for the
// handlers (contract in connectors/http_server.h).
//
// The I/O thread owns the connections: it accepts, reads into a per-connection
// buffer, parses (ParseRequest), and hands one complete request at a time per
// connection to the pool; a worker routes it (Route) and queues the
// serialized answer back, waking the I/O thread through an eventfd. One
// request in flight per connection keeps pipelined answers in order. Every
// connection has one deadline (request arrival, keep-alive idle, write
// progress or the final drain); the loop's epoll timeout is the nearest one.
#include "connectors/http_server.h"

#include <fcntl.h>
#include <netdb.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "common/json_text.h"
#include "config/config.h"

namespace clv::connectors {
namespace {

// How long a connection we are closing is drained of what the client still
// sends, so that our answer is not lost to a TCP reset.
constexpr int64_t kDrainMs = 1000;
constexpr size_t kDrainMaxBytes = size_t{1} << 20;
constexpr size_t kReadChunkBytes = 16384;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string ErrorJson(int status, std::string_view message) {
  std::string body = "{\"error\":";
  AppendJsonString(body, message);
  body += ",\"status\":";
  body += std::to_string(status);
  body += "}";
  return body;
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 418: return "I'm a teapot";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return status < 400 ? "OK" : "Error";
  }
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Query component: '+' is a space, %XX a byte; a malformed escape stays as
// written (the parameter's own check then refuses it).
std::string DecodeQueryPart(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '+') {
      out += ' ';
    } else if (raw[i] == '%' && i + 2 < raw.size() && HexValue(raw[i + 1]) >= 0 &&
               HexValue(raw[i + 2]) >= 0) {
      out += static_cast<char>(HexValue(raw[i + 1]) * 16 + HexValue(raw[i + 2]));
      i += 2;
    } else {
      out += raw[i];
    }
  }
  return out;
}

void ParseQuery(std::string_view query, std::multimap<std::string, std::string>* params) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    params->emplace(
        DecodeQueryPart(pair.substr(0, eq)),
        eq == std::string_view::npos ? std::string() : DecodeQueryPart(pair.substr(eq + 1)));
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

bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Whether a comma-separated header value lists `token` (case-insensitive).
bool HasToken(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (IEqualsAscii(item, token)) return true;
  }
  return false;
}

// One request as parsed from a connection's buffer.
struct ParsedRequest {
  std::string method;
  std::string target;
  bool http10 = false;
  bool keep_alive = true;
  bool has_authorization = false;
  std::string authorization;
  bool expect_continue = false;
  size_t header_bytes = 0;  // request line + headers + blank line
  size_t body_bytes = 0;
};

enum class ParseOutcome : uint8_t { kIncomplete, kHeaders, kError };

struct ParseError {
  int status = 400;
  std::string message;
};

// Parses the request line and headers at the front of `buffer`. kIncomplete:
// the blank line has not arrived yet (and the limit is not exceeded);
// kHeaders: *request is filled (its body may still be arriving); kError:
// *error says what to answer before closing.
ParseOutcome ParseHead(std::string_view buffer, size_t max_body_bytes, ParsedRequest* request,
                       ParseError* error) {
  auto fail = [&](int status, std::string message) {
    error->status = status;
    error->message = std::move(message);
    return ParseOutcome::kError;
  };
  size_t end = buffer.find("\r\n\r\n");
  size_t terminator = 4;
  const size_t bare = buffer.find("\n\n");
  if (bare != std::string_view::npos && (end == std::string_view::npos || bare < end)) {
    end = bare;
    terminator = 2;
  }
  if (end == std::string_view::npos || end + terminator > kMaxHeaderBytes) {
    const size_t line_end = buffer.find('\n');
    if ((line_end == std::string_view::npos && buffer.size() > kMaxHeaderBytes) ||
        (line_end != std::string_view::npos && line_end > kMaxHeaderBytes)) {
      return fail(414, "request line longer than " + std::to_string(kMaxHeaderBytes) + " bytes");
    }
    if (buffer.size() > kMaxHeaderBytes) {
      return fail(431, "request headers longer than " + std::to_string(kMaxHeaderBytes) + " bytes");
    }
    return ParseOutcome::kIncomplete;
  }
  request->header_bytes = end + terminator;
  std::string_view head = buffer.substr(0, end);
  auto next_line = [&head]() {
    const size_t newline = head.find('\n');
    std::string_view line = head.substr(0, newline);
    head = newline == std::string_view::npos ? std::string_view() : head.substr(newline + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
  };

  // Request line: METHOD SP request-target SP HTTP-version
  const std::string_view line = next_line();
  const size_t first = line.find(' ');
  const size_t last = line.rfind(' ');
  if (first == std::string_view::npos || first == last || first == 0) {
    return fail(400, "malformed request line (expected 'METHOD /path HTTP/1.1')");
  }
  const std::string_view method = line.substr(0, first);
  const std::string_view target = line.substr(first + 1, last - first - 1);
  const std::string_view version = line.substr(last + 1);
  if (!std::all_of(method.begin(), method.end(), IsTokenChar)) {
    return fail(400, "malformed request line: bad method");
  }
  if (target.empty() || target.front() != '/' ||
      std::any_of(target.begin(), target.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    return fail(400, "malformed request target (expected a path starting with '/')");
  }
  if (version == "HTTP/1.1") {
    request->http10 = false;
  } else if (version == "HTTP/1.0") {
    request->http10 = true;
  } else if (version.starts_with("HTTP/") && version.size() == 8 && version[5] >= '2' &&
             version[5] <= '9') {
    return fail(505, "HTTP version " + std::string(ClipForError(version)) +
                         " not supported (HTTP/1.1 or HTTP/1.0)");
  } else {
    return fail(400, "malformed request line: bad HTTP version");
  }
  request->method.assign(method);
  request->target.assign(target);
  request->keep_alive = !request->http10;

  bool have_length = false;
  uint64_t length = 0;
  bool chunked = false;
  while (!head.empty()) {
    const std::string_view header = next_line();
    if (header.empty()) continue;
    if (header.front() == ' ' || header.front() == '\t') {
      return fail(400, "obsolete header line folding is not accepted");
    }
    const size_t colon = header.find(':');
    if (colon == std::string_view::npos || colon == 0 ||
        !std::all_of(header.begin(), header.begin() + static_cast<std::ptrdiff_t>(colon),
                     IsTokenChar)) {
      return fail(400, "malformed header line '" + std::string(ClipForError(header)) + "'");
    }
    const std::string_view name = header.substr(0, colon);
    std::string_view value = header.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (IEqualsAscii(name, "Content-Length")) {
      uint64_t parsed = 0;
      const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), parsed);
      const bool digits =
          !value.empty() && value.size() <= 18 &&
          std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits || ec != std::errc() || ptr != value.data() + value.size()) {
        return fail(400, "bad Content-Length '" + std::string(ClipForError(value)) +
                             "' (expected a non-negative decimal number)");
      }
      if (have_length && parsed != length) {
        return fail(400, "conflicting Content-Length headers");
      }
      have_length = true;
      length = parsed;
    } else if (IEqualsAscii(name, "Transfer-Encoding")) {
      chunked = true;
    } else if (IEqualsAscii(name, "Connection")) {
      if (HasToken(value, "close")) request->keep_alive = false;
      if (request->http10 && HasToken(value, "keep-alive")) request->keep_alive = true;
    } else if (IEqualsAscii(name, "Authorization")) {
      request->has_authorization = true;
      request->authorization.assign(value);
    } else if (IEqualsAscii(name, "Expect")) {
      request->expect_continue = IEqualsAscii(value, "100-continue");
    }
  }
  if (chunked) {
    if (have_length) return fail(400, "both Transfer-Encoding and Content-Length");
    return fail(501, "Transfer-Encoding is not supported; send a Content-Length");
  }
  if (length > max_body_bytes) {
    return fail(413, "request body of " + std::to_string(length) + " bytes is over the limit of " +
                         std::to_string(max_body_bytes) + " bytes");
  }
  request->body_bytes = static_cast<size_t>(length);
  return ParseOutcome::kHeaders;
}

// "HTTP/1.1 status reason" + headers + body (none for HEAD).
std::string SerializeResponse(const HttpResponse& response, bool head_only, bool close,
                              bool http10_keep_alive) {
  std::string out;
  out.reserve(256 + (head_only ? 0 : response.body.size()));
  out += "HTTP/1.1 ";
  out += std::to_string(response.status);
  out += ' ';
  out += ReasonPhrase(response.status);
  out += "\r\nContent-Type: ";
  out += response.content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(response.body.size());
  out += "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
  std::array<char, 64> date{};
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  if (gmtime_r(&now, &utc) != nullptr &&
      std::strftime(date.data(), date.size(), "%a, %d %b %Y %H:%M:%S GMT", &utc) > 0) {
    out += "Date: ";
    out += date.data();
    out += "\r\n";
  }
  for (const auto& [name, value] : response.headers) {
    // Header names/values come from our own handlers; still, no line breaks.
    if (name.find_first_of("\r\n") != std::string::npos ||
        value.find_first_of("\r\n") != std::string::npos) {
      continue;
    }
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (close) {
    out += "Connection: close\r\n";
  } else if (http10_keep_alive) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
  if (!head_only) out += response.body;
  return out;
}

// A connection, owned by the I/O thread.
struct Connection {
  enum class Phase : uint8_t {
    kReading,   // waiting for (the rest of) a request
    kBusy,      // a handler is answering the parsed request
    kDraining,  // answered and shut down for writing; reading what is left
  };
  int fd = -1;
  uint64_t id = 0;
  Phase phase = Phase::kReading;
  std::string in;
  std::string out;
  size_t out_sent = 0;
  bool close_after_write = false;
  bool peer_closed = false;      // read() returned 0
  bool continue_sent = false;    // "100 Continue" for the request being read
  bool request_started = false;  // bytes of the next request have arrived
  int requests = 0;              // answered or being answered
  int64_t deadline_ms = 0;
  int64_t last_activity_ms = 0;
  int64_t last_answer_ms = 0;
  size_t drained_bytes = 0;
  uint32_t events = 0;  // epoll interest registered
};

// A parsed request waiting for a worker, and the answer coming back.
struct Job {
  uint64_t connection = 0;
  ParsedRequest request;
  bool close = false;
};
struct Answer {
  uint64_t connection = 0;
  std::string bytes;
  bool close = false;
};

constexpr uint64_t kListenId = 0;
constexpr uint64_t kWakeId = 1;

class HttpServerImpl final : public HttpServer {
 public:
  HttpServerImpl(const HttpServerOptions& options, std::vector<CompiledRoute> routes,
                 std::string endpoints)
      : options_(options), routes_(std::move(routes)), endpoints_(std::move(endpoints)) {}
  ~HttpServerImpl() override {
    Stop();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }
  HttpServerImpl(const HttpServerImpl&) = delete;
  HttpServerImpl& operator=(const HttpServerImpl&) = delete;

  Status Init() {
    const std::string where = options_.bind + ":" + std::to_string(options_.port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const std::string port_text = std::to_string(options_.port);
    if (int rc = ::getaddrinfo(options_.bind.c_str(), port_text.c_str(), &hints, &found); rc != 0) {
      return Status::Error("http: cannot bind " + where + ": " + ::gai_strerror(rc));
    }
    std::string last_error = "no address";
    for (addrinfo* address = found; address != nullptr; address = address->ai_next) {
      const int fd =
          ::socket(address->ai_family, address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   address->ai_protocol);
      if (fd < 0) {
        last_error = std::strerror(errno);
        continue;
      }
      // Only SO_REUSEADDR (fast restarts); no SO_REUSEPORT, which would let a
      // second instance silently share our port.
      int yes = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
      if (::bind(fd, address->ai_addr, address->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
        last_error = std::strerror(errno);
        ::close(fd);
        continue;
      }
      listen_fd_ = fd;
      break;
    }
    ::freeaddrinfo(found);
    if (listen_fd_ < 0) {
      return Status::Error("http: cannot bind " + where + " (" + last_error +
                           "; address in use, not a local address, or not permitted)");
    }
    sockaddr_storage bound{};
    socklen_t bound_size = sizeof(bound);
    if (::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &bound_size) != 0) {
      return Status::Error("http: " + where + ": getsockname: " + std::strerror(errno));
    }
    port_ = bound.ss_family == AF_INET6
                ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
                : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd_ < 0 || wake_fd_ < 0) {
      return Status::Error("http " + where + ": epoll/eventfd: " + std::strerror(errno));
    }
    if (!Watch(listen_fd_, kListenId, EPOLLIN, EPOLL_CTL_ADD) ||
        !Watch(wake_fd_, kWakeId, EPOLLIN, EPOLL_CTL_ADD)) {
      return Status::Error("http " + where + ": epoll_ctl: " + std::strerror(errno));
    }
    for (int i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { WorkLoop(); });
    io_thread_ = std::thread([this] { IoLoop(); });
    return Status::Ok();
  }

  int port() const override { return port_; }

  void Stop() override {
    if (stopped_.exchange(true)) return;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    Wake();
    if (io_thread_.joinable()) io_thread_.join();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
  }

 private:
  // ------------------------------------------------------------ I/O thread --

  bool Watch(int fd, uint64_t id, uint32_t events, int op) {
    epoll_event event{};
    event.events = events;
    event.data.u64 = id;
    return ::epoll_ctl(epoll_fd_, op, fd, &event) == 0;
  }

  void Wake() {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = ::write(wake_fd_, &one, sizeof(one));
  }

  void IoLoop() {
    std::vector<epoll_event> events(256);
    while (true) {
      {
        std::lock_guard lock(mutex_);
        if (stopping_) break;
      }
      const int ready =
          ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), NextTimeoutMs());
      const int64_t now = NowMs();
      for (int i = 0; i < ready; ++i) {
        const uint64_t id = events[i].data.u64;
        if (id == kListenId) {
          Accept(now);
        } else if (id == kWakeId) {
          uint64_t count = 0;
          [[maybe_unused]] const ssize_t got = ::read(wake_fd_, &count, sizeof(count));
          DeliverAnswers(now);
        } else {
          OnEvent(id, events[i].events, now);
        }
      }
      ExpireDeadlines(NowMs());
      if (listen_paused_until_ms_ != 0 && NowMs() >= listen_paused_until_ms_) {
        listen_paused_until_ms_ = 0;
        Watch(listen_fd_, kListenId, EPOLLIN, EPOLL_CTL_MOD);
      }
    }
    ::close(listen_fd_);
    listen_fd_ = -1;
    for (auto& [id, connection] : connections_) ::close(connection.fd);
    connections_.clear();
  }

  int NextTimeoutMs() const {
    int64_t next = std::numeric_limits<int64_t>::max();
    for (const auto& [id, connection] : connections_) {
      if (connection.deadline_ms != 0) next = std::min(next, connection.deadline_ms);
    }
    if (listen_paused_until_ms_ != 0) next = std::min(next, listen_paused_until_ms_);
    if (next == std::numeric_limits<int64_t>::max()) return 1000;
    return static_cast<int>(std::clamp<int64_t>(next - NowMs() + 1, 0, 1000));
  }

  void Accept(int64_t now) {
    while (true) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: free one idle connection, else pause accepting.
          if (EvictLongestIdle()) continue;
          listen_paused_until_ms_ = now + 100;
          Watch(listen_fd_, kListenId, 0, EPOLL_CTL_MOD);
        }
        return;
      }
      if (static_cast<int>(connections_.size()) >= options_.max_connections &&
          !EvictLongestIdle()) {
        ::close(fd);  // every connection has a handler running
        continue;
      }
      const uint64_t id = next_id_++;
      Connection& connection = connections_[id];
      connection.fd = fd;
      connection.id = id;
      connection.last_activity_ms = now;
      connection.deadline_ms = now + options_.read_timeout_ms;
      if (!UpdateInterest(connection, EPOLL_CTL_ADD)) {
        ::close(fd);
        connections_.erase(id);
      }
    }
  }

  // Closes the open connection that has been quiet the longest and has no
  // handler running. False when there is none.
  bool EvictLongestIdle() {
    Connection* oldest = nullptr;
    for (auto& [id, connection] : connections_) {
      if (connection.phase == Connection::Phase::kBusy) continue;
      // Ties (same millisecond): the older connection (smaller id).
      if (oldest == nullptr || std::pair(connection.last_activity_ms, connection.id) <
                                   std::pair(oldest->last_activity_ms, oldest->id)) {
        oldest = &connection;
      }
    }
    if (oldest == nullptr) return false;
    Close(oldest->id);
    return true;
  }

  void Close(uint64_t id) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    ::close(it->second.fd);  // also removes it from the epoll set
    connections_.erase(it);
  }

  // Reading unless draining is done or the buffer is full; writing while an
  // answer is pending.
  bool UpdateInterest(Connection& connection, int op = EPOLL_CTL_MOD) {
    uint32_t events = 0;
    const size_t cap = kMaxHeaderBytes + static_cast<size_t>(options_.max_body_bytes) + 1;
    if (!connection.peer_closed && connection.in.size() < cap) events |= EPOLLIN | EPOLLRDHUP;
    if (connection.out_sent < connection.out.size()) events |= EPOLLOUT;
    if (op == EPOLL_CTL_MOD && events == connection.events) return true;
    connection.events = events;
    return Watch(connection.fd, connection.id, events, op);
  }

  void OnEvent(uint64_t id, uint32_t events, int64_t now) {
    auto it = connections_.find(id);
    if (it == connections_.end()) return;
    Connection& connection = it->second;
    if ((events & EPOLLERR) != 0) {
      Close(id);
      return;
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) != 0 && !ReadAvailable(connection, now)) {
      Close(id);
      return;
    }
    if (!Progress(connection, now)) Close(id);
  }

  // Reads what the socket has. False when the connection is to be closed now.
  bool ReadAvailable(Connection& connection, int64_t now) {
    std::array<char, kReadChunkBytes>& chunk = read_buffer_;
    const size_t cap = kMaxHeaderBytes + static_cast<size_t>(options_.max_body_bytes) + 1;
    while (!connection.peer_closed) {
      if (connection.phase != Connection::Phase::kDraining && connection.in.size() >= cap) break;
      const ssize_t got = ::recv(connection.fd, chunk.data(), chunk.size(), 0);
      if (got > 0) {
        connection.last_activity_ms = now;
        if (connection.phase == Connection::Phase::kDraining) {
          connection.drained_bytes += static_cast<size_t>(got);
          if (connection.drained_bytes > kDrainMaxBytes) return false;
          continue;
        }
        connection.in.append(chunk.data(), static_cast<size_t>(got));
        continue;
      }
      if (got == 0) {
        connection.peer_closed = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return false;  // reset by the peer, or another error
    }
    if (connection.phase == Connection::Phase::kDraining) return !connection.peer_closed;
    return true;
  }

  // Writes what is pending, parses and dispatches the next request, sets the
  // deadline. False when the connection is to be closed now.
  bool Progress(Connection& connection, int64_t now) {
    if (connection.phase == Connection::Phase::kDraining) return UpdateInterest(connection);
    if (!Flush(connection, now)) return false;
    if (connection.out_sent < connection.out.size()) {
      return UpdateInterest(connection);  // deadline: set by Flush
    }
    if (connection.close_after_write) {
      if (connection.peer_closed) return false;
      // Answered for the last time: stop sending, drain what the client is
      // still sending so that it reads our answer rather than a reset.
      ::shutdown(connection.fd, SHUT_WR);
      connection.phase = Connection::Phase::kDraining;
      connection.in.clear();
      connection.deadline_ms = now + std::min<int64_t>(kDrainMs, options_.read_timeout_ms);
      return UpdateInterest(connection);
    }
    if (connection.phase == Connection::Phase::kBusy) return UpdateInterest(connection);
    if (!ParseNext(connection, now)) return false;
    if (connection.phase == Connection::Phase::kReading && connection.in.empty() &&
        connection.out_sent >= connection.out.size() && connection.peer_closed) {
      return false;  // the client is gone and nothing is left to answer
    }
    return UpdateInterest(connection);
  }

  bool Flush(Connection& connection, int64_t now) {
    while (connection.out_sent < connection.out.size()) {
      const ssize_t sent = ::send(connection.fd, connection.out.data() + connection.out_sent,
                                  connection.out.size() - connection.out_sent, MSG_NOSIGNAL);
      if (sent > 0) {
        connection.out_sent += static_cast<size_t>(sent);
        connection.deadline_ms = now + options_.write_timeout_ms;
        continue;
      }
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (connection.deadline_ms == 0) connection.deadline_ms = now + options_.write_timeout_ms;
        return true;
      }
      return false;
    }
    connection.out.clear();
    connection.out_sent = 0;
    return true;
  }

  // With the connection idle: parses the next request in its buffer and
  // answers a framing error or hands the request to the pool.
  bool ParseNext(Connection& connection, int64_t now) {
    // Empty lines before a request line are ignored (RFC 9112, 2.2).
    const size_t start = connection.in.find_first_not_of("\r\n");
    connection.in.erase(0, start == std::string::npos ? connection.in.size() : start);
    if (connection.in.empty()) {
      if (connection.request_started || connection.requests == 0) {
        if (connection.deadline_ms == 0) connection.deadline_ms = now + options_.read_timeout_ms;
      } else {
        connection.deadline_ms = connection.last_answer_ms + options_.keep_alive_timeout_ms;
      }
      return true;
    }
    if (!connection.request_started) {
      connection.request_started = true;
      connection.deadline_ms = now + options_.read_timeout_ms;
    }
    ParsedRequest request;
    ParseError error;
    const ParseOutcome outcome =
        ParseHead(connection.in, static_cast<size_t>(options_.max_body_bytes), &request, &error);
    if (outcome == ParseOutcome::kIncomplete) {
      return !connection.peer_closed;  // a partial request from a client that left
    }
    if (outcome == ParseOutcome::kError) {
      HttpResponse response;
      response.Error(error.status, "request rejected: " + error.message);
      connection.out = SerializeResponse(response, false, true, false);
      connection.out_sent = 0;
      connection.close_after_write = true;
      return Progress(connection, now);
    }
    const size_t total = request.header_bytes + request.body_bytes;
    if (connection.in.size() < total) {
      if (request.expect_continue && !connection.continue_sent) {
        connection.continue_sent = true;
        connection.out = "HTTP/1.1 100 Continue\r\n\r\n";
        connection.out_sent = 0;
        const int64_t request_deadline = connection.deadline_ms;
        if (!Flush(connection, now)) return false;
        connection.deadline_ms = request_deadline;  // still the request's
      }
      return !connection.peer_closed;
    }
    connection.in.erase(0, total);
    connection.request_started = false;
    connection.continue_sent = false;
    ++connection.requests;
    const bool close = !request.keep_alive ||
                       connection.requests >= options_.keep_alive_max_requests ||
                       (request.method != "GET" && request.method != "HEAD");
    connection.phase = Connection::Phase::kBusy;
    connection.deadline_ms = 0;  // the handler's time is not the client's
    {
      std::lock_guard lock(mutex_);
      jobs_.push_back(Job{connection.id, std::move(request), close});
    }
    work_ready_.notify_one();
    return true;
  }

  void DeliverAnswers(int64_t now) {
    std::vector<Answer> answers;
    {
      std::lock_guard lock(mutex_);
      answers.swap(answers_);
    }
    for (Answer& answer : answers) {
      auto it = connections_.find(answer.connection);
      if (it == connections_.end()) continue;  // closed meanwhile
      Connection& connection = it->second;
      connection.phase = Connection::Phase::kReading;
      connection.out += answer.bytes;
      connection.close_after_write = answer.close;
      connection.last_activity_ms = now;
      connection.last_answer_ms = now;
      connection.deadline_ms = 0;
      if (!Progress(connection, now)) Close(answer.connection);
    }
  }

  void ExpireDeadlines(int64_t now) {
    std::vector<uint64_t> expired;
    for (const auto& [id, connection] : connections_) {
      if (connection.deadline_ms != 0 && now >= connection.deadline_ms) expired.push_back(id);
    }
    for (uint64_t id : expired) Close(id);
  }

  // --------------------------------------------------------------- workers --

  void WorkLoop() {
    while (true) {
      Job job;
      {
        std::unique_lock lock(mutex_);
        work_ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (stopping_) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      Answer answer;
      answer.connection = job.connection;
      answer.close = job.close;
      HttpResponse response = Serve(job.request);
      answer.bytes = SerializeResponse(response, job.request.method == "HEAD", job.close,
                                       job.request.http10 && !job.close);
      {
        std::lock_guard lock(mutex_);
        answers_.push_back(std::move(answer));
      }
      Wake();
    }
  }

  HttpResponse Serve(const ParsedRequest& request) {
    const std::string_view target = request.target;
    const size_t question = target.find('?');
    const std::string_view raw_path = target.substr(0, question);
    std::multimap<std::string, std::string> params;
    if (question != std::string_view::npos) ParseQuery(target.substr(question + 1), &params);
    HttpResponse response;
    try {
      Route(request, raw_path, &params, &response);
    } catch (const std::exception& e) {
      response = HttpResponse();
      response.Error(
          500, "internal error serving " + std::string(ClipForError(raw_path)) + ": " + e.what());
    } catch (...) {
      response = HttpResponse();
      response.Error(500, "internal error serving " + std::string(ClipForError(raw_path)));
    }
    return response;
  }

  void Route(const ParsedRequest& req, std::string_view path,
             const std::multimap<std::string, std::string>* params, HttpResponse* res) {
    const std::string_view method = req.method;
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
      res->headers.emplace_back("WWW-Authenticate", "Bearer realm=\"clvstream\"");
      res->Error(401, req.has_authorization ? "invalid bearer token"
                                            : "missing 'Authorization: Bearer <token>' header");
      return;
    }
    if (route == nullptr && (!at_path.empty() || !method_served)) {
      std::vector<const CompiledRoute*> all;
      for (const CompiledRoute& candidate : routes_) all.push_back(&candidate);
      const std::string allow = AllowList(at_path.empty() ? all : at_path);
      res->headers.emplace_back("Allow", allow);
      res->Error(405, "method " + std::string(ClipForError(method)) + " not allowed on " +
                          std::string(ClipForError(path)) + "; allowed: " + allow);
      return;
    }
    if (route == nullptr) {
      res->Error(404,
                 "unknown path " + std::string(ClipForError(path)) + "; endpoints: " + endpoints_);
      return;
    }
    HttpRequest request;
    request.method = method;
    request.path = path;
    if (route->captures) request.capture = path.substr(route->prefix.size());
    request.params = params;
    route->handler(request, res);
  }

  bool Authorized(const ParsedRequest& req) const {
    const std::string_view header = req.authorization;
    constexpr std::string_view kScheme = "Bearer ";
    if (header.size() < kScheme.size() ||
        !IEqualsAscii(header.substr(0, kScheme.size()), kScheme)) {
      return false;
    }
    return ConstantTimeEquals(header.substr(kScheme.size()), options_.token);
  }

  const HttpServerOptions options_;
  const std::vector<CompiledRoute> routes_;
  const std::string endpoints_;  // for 404 answers
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  int port_ = -1;
  std::atomic<bool> stopped_ = false;
  std::thread io_thread_;
  std::vector<std::thread> workers_;

  // I/O thread only.
  std::unordered_map<uint64_t, Connection> connections_;
  uint64_t next_id_ = 2;  // 0 and 1: the listener and the wake-up eventfd
  int64_t listen_paused_until_ms_ = 0;
  std::array<char, kReadChunkBytes> read_buffer_;

  // Shared between the I/O thread and the workers.
  std::mutex mutex_;
  std::condition_variable work_ready_;
  bool stopping_ = false;
  std::deque<Job> jobs_;
  std::vector<Answer> answers_;
};

}  // namespace

void HttpResponse::Error(int error_status, std::string_view message) {
  status = error_status;
  Json(ErrorJson(error_status, message));
}

// Shortens what we echo back from a request (paths, parameters) in errors.
std::string_view ClipForError(std::string_view text) { return text.substr(0, 120); }

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
  options.threads = http.threads;
  options.max_connections = http.max_connections;
  options.read_timeout_ms = http.read_timeout_ms;
  options.write_timeout_ms = http.write_timeout_ms;
  options.keep_alive_timeout_ms = http.keep_alive_timeout_ms;
  options.keep_alive_max_requests = http.keep_alive_max_requests;
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
      options.max_body_bytes < 0 || options.max_connections < 1) {
    return Status::Error(
        "http " + where +
        ": timeouts, keep_alive_max_requests and max_connections must be positive, "
        "max_body_bytes not negative");
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
