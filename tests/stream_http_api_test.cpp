// The service API (stream/http_api routes on connectors/http_server) against a
// real HTTP client (httplib::Client) on 127.0.0.1, with
// fake handlers standing in for the service: every status code and JSON error
// of the API, the token rules, and that abusive clients do not block others.
#include <httplib.h>

#include <atomic>
#include <cctype>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "connectors/http_server.h"
#include "stream/decoder.h"
#include "stream/event.h"
#include "stream/http_api.h"
#include "tests/test_support.h"

namespace clv::connectors {
namespace {

using stream::ApiHandlers;
using stream::ApiRoutes;
using stream::UserAnswer;

using nlohmann::json;

// What the fake service saw and answers.
struct FakeService {
  std::mutex mutex;
  std::vector<std::string> user_ids_seen;
  std::vector<std::pair<int, std::string>> top_calls;
  std::atomic<bool> ready = false;

  ApiHandlers Handlers() {
    ApiHandlers handlers;
    handlers.user_json = [this](std::string_view id) {
      std::lock_guard lock(mutex);
      user_ids_seen.emplace_back(id);
      if (id == "ghost") return UserAnswer{};
      if (id == "boom") throw std::runtime_error("state store exploded");
      if (id == "moved") {
        return UserAnswer{UserAnswer::kOtherOwner,
                          json{{"error", "moved away"}, {"partition", 3}}.dump()};
      }
      return UserAnswer{UserAnswer::kFound,
                        json{{"user_id", std::string(id)}, {"clv", 12.5}}.dump()};
    };
    handlers.top_json = [this](int n, std::string_view by, bool group) {
      std::lock_guard lock(mutex);
      top_calls.emplace_back(n, std::string(by) + (group ? "/group" : ""));
      return json{{"n", n}, {"by", std::string(by)}, {"users", json::array()}}.dump();
    };
    handlers.metrics_text = [] {
      return std::string("# TYPE clv_x_total counter\nclv_x_total 1\n");
    };
    handlers.ready = [this] { return ready.load(); };
    handlers.ready_detail = [this] {
      return json{{"ready", ready.load()}, {"partitions_assigned", ready.load()}}.dump();
    };
    handlers.summary_json = [] { return json{{"users", 3}, {"events_per_second", 1.5}}.dump(); };
    return handlers;
  }
};

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(HttpServerOptions options = {}) {
    auto status = HttpServer::Start(options, ApiRoutes(service_.Handlers()), &server_);
    ASSERT_TRUE(status.ok()) << status.message;
    ASSERT_GT(server_->port(), 0);
  }
  std::unique_ptr<httplib::Client> NewClient() {
    auto client = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client->set_url_encode(false);  // send our percent-encoding as written
    client->set_read_timeout(10, 0);
    client->set_connection_timeout(10, 0);
    return client;
  }
  // GET and expect a JSON error with `status`; returns its message.
  std::string ExpectJsonError(const std::string& path, int status,
                              const httplib::Headers& headers = {}) {
    auto res = NewClient()->Get(path, headers);
    if (!res) {
      ADD_FAILURE() << path << ": no response: " << httplib::to_string(res.error());
      return "";
    }
    EXPECT_EQ(res->status, status) << path << " -> " << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json") << path;
    json body = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(body.is_object()) << path << ": not JSON: " << res->body;
    if (!body.is_object()) return "";
    EXPECT_EQ(body.value("status", 0), status) << res->body;
    EXPECT_TRUE(body.contains("error")) << res->body;
    return body.value("error", "");
  }

  FakeService service_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, HealthzAnswersOnAnEphemeralPort) {
  StartServer();
  auto res = NewClient()->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body)["status"], "ok");
}

TEST_F(HttpServerTest, UserLookupReturnsJsonAnd404ForUnknownUser) {
  StartServer();
  auto res = NewClient()->Get("/users/alice");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(json::parse(res->body)["user_id"], "alice");

  std::string error = ExpectJsonError("/users/ghost", 404);
  EXPECT_NE(error.find("ghost"), std::string::npos) << error;
}

TEST_F(HttpServerTest, UserOfAPartitionOwnedElsewhereIs421WithTheHandlersAnswer) {
  StartServer();
  auto res = NewClient()->Get("/users/moved");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 421);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  auto body = json::parse(res->body);
  EXPECT_EQ(body["error"], "moved away");
  EXPECT_EQ(body["partition"], 3);
}

TEST_F(HttpServerTest, UserIdIsPercentDecodedFromTheRawTarget) {
  StartServer();
  for (const char* path : {"/users/a%20b", "/users/a%2Fb", "/users/caf%C3%A9", "/users/x+y"}) {
    auto res = NewClient()->Get(path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 200) << path << " " << res->body;
  }
  std::lock_guard lock(service_.mutex);
  EXPECT_EQ(service_.user_ids_seen, (std::vector<std::string>{"a b", "a/b", "caf\xC3\xA9", "x+y"}));
}

TEST_F(HttpServerTest, MalformedUserIdsAre400) {
  StartServer();
  EXPECT_NE(ExpectJsonError("/users/", 400).find("1..256"), std::string::npos);
  EXPECT_NE(ExpectJsonError("/users/" + std::string(257, 'u'), 400).find("257"), std::string::npos);
  EXPECT_NE(ExpectJsonError("/users/bad%zzescape", 400).find("percent"), std::string::npos);
  ExpectJsonError("/users/trailing%4", 400);
  ExpectJsonError("/users/new%0Aline", 400);
  // 256 bytes is the largest id accepted; percent-escapes count as one byte.
  auto res = NewClient()->Get("/users/" + std::string(255, 'u') + "%41");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  // None of the rejected ids reached the service.
  std::lock_guard lock(service_.mutex);
  ASSERT_EQ(service_.user_ids_seen.size(), 1u);
  EXPECT_EQ(service_.user_ids_seen[0], std::string(255, 'u') + "A");
}

// "%XX" for every byte but unreserved ones (RFC 3986), as a client would.
std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte) != 0 || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    }
  }
  return out;
}

// One user-id rule (common/user_id.h): every id the stream decoder accepts
// can be read through /users/{id} (percent-encoded), and every id it refuses
// is refused by HTTP too, for the same reason.
TEST_F(HttpServerTest, EveryUserIdTheStreamAcceptsIsReadable) {
  StartServer();
  stream::Decoder decoder({}, {});
  stream::Event event;
  std::string reason;
  auto message = [](const std::string& id) {
    return json{{"user_id", id}, {"type", "search"}, {"ts", 1767225600}}.dump();
  };
  const std::vector<std::string> accepted = {
      "jane doe",   " padded ",         "caf\xc3\xa9 \xe5\x8c\x97\xe4\xba\xac",
      "a/b",        "50%off",           "what?is=this&x",
      "#hash+plus", "\xf0\x9f\x9b\x92", std::string(256, 'q')};
  for (const std::string& id : accepted) {
    ASSERT_TRUE(decoder.Decode(message(id), 1767225600000, &event, &reason)) << id << reason;
    auto res = NewClient()->Get("/users/" + PercentEncode(event.user_id));
    ASSERT_TRUE(res) << id;
    EXPECT_EQ(res->status, 200) << id << " -> " << res->body;
    EXPECT_EQ(json::parse(res->body)["user_id"], id);
  }
  const std::vector<std::string> refused = {"a\nb",    "\ttab",      "   ", "\xc2\xa0",
                                            "del\x7f", "c1\xc2\x85", "",    std::string(257, 'q')};
  for (const std::string& id : refused) {
    ASSERT_FALSE(decoder.Decode(message(id), 1767225600000, &event, &reason)) << id;
    const std::string rule = reason.substr(reason.find(": ") + 2);
    const std::string error = ExpectJsonError("/users/" + PercentEncode(id), 400);
    EXPECT_NE(error.find(rule), std::string::npos) << "stream: " << reason << "; http: " << error;
  }
  // Invalid UTF-8 cannot come through JSON; HTTP refuses it too.
  EXPECT_NE(ExpectJsonError("/users/a%FFb", 400).find("UTF-8"), std::string::npos);
  std::lock_guard lock(service_.mutex);
  EXPECT_EQ(service_.user_ids_seen, accepted);
}

TEST_F(HttpServerTest, TopValidatesNAndBy) {
  StartServer();
  auto client = NewClient();
  auto res = client->Get("/top");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = client->Get("/top?n=1000&by=churn_risk");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = client->Get("/top?n=1&by=clv");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = client->Get("/top?n=2&scope=group");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = client->Get("/top?scope=local&by=churn_risk");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  {
    std::lock_guard lock(service_.mutex);
    EXPECT_EQ(service_.top_calls, (std::vector<std::pair<int, std::string>>{{100, "clv"},
                                                                            {1000, "churn_risk"},
                                                                            {1, "clv"},
                                                                            {2, "clv/group"},
                                                                            {100, "churn_risk"}}));
  }
  for (const char* bad : {"/top?n=0", "/top?n=1001", "/top?n=-1", "/top?n=abc",
                          "/top?n=", "/top?n=1.5", "/top?n=99999999999999999999", "/top?n=%2010"}) {
    EXPECT_NE(ExpectJsonError(bad, 400).find("parameter n"), std::string::npos) << bad;
  }
  for (const char* bad : {"/top?by=revenue", "/top?n=5&by=", "/top?by=CLV"}) {
    EXPECT_NE(ExpectJsonError(bad, 400).find("parameter by"), std::string::npos) << bad;
  }
  for (const char* bad : {"/top?scope=all", "/top?scope=", "/top?n=3&scope=GROUP"}) {
    EXPECT_NE(ExpectJsonError(bad, 400).find("parameter scope"), std::string::npos) << bad;
  }
  std::lock_guard lock(service_.mutex);
  EXPECT_EQ(service_.top_calls.size(), 5u) << "a rejected request reached the service";
}

TEST_F(HttpServerTest, MetricsUsePrometheusTextContentType) {
  StartServer();
  auto res = NewClient()->Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(res->body.find("clv_x_total 1"), std::string::npos);
}

TEST_F(HttpServerTest, ReadyzIs503WithDetailUntilReady) {
  StartServer();
  auto res = NewClient()->Get("/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(json::parse(res->body)["partitions_assigned"], false);
  service_.ready = true;
  res = NewClient()->Get("/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body)["ready"], true);
}

TEST_F(HttpServerTest, DashboardAndSummaryAreServed) {
  StartServer();
  auto res = NewClient()->Get("/");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(res->body.find("/api/summary"), std::string::npos);
  // Self-contained: nothing loaded from elsewhere (no internet on our machines).
  for (const char* external : {"src=", "href=", "<link", "@import", "url("}) {
    EXPECT_EQ(res->body.find(external), std::string::npos)
        << "the page loads something: " << external;
  }
  EXPECT_EQ(res->body, std::string(DashboardHtml()));
  res = NewClient()->Get("/api/summary");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body)["users"], 3);
}

TEST_F(HttpServerTest, UnknownPathIs404AndWritesAre405) {
  StartServer();
  EXPECT_NE(ExpectJsonError("/nope", 404).find("/nope"), std::string::npos);
  ExpectJsonError("/users", 404);
  ExpectJsonError("/metrics/", 404);
  ExpectJsonError("/" + std::string(2000, 'x'), 404);

  auto client = NewClient();
  std::vector<httplib::Result> results;
  results.push_back(client->Post("/users/alice", "{\"clv\": 1}", "application/json"));
  results.push_back(client->Put("/top", "x", "text/plain"));
  results.push_back(client->Delete("/users/alice"));
  results.push_back(client->Patch("/metrics", "x", "text/plain"));
  results.push_back(client->Options("/healthz"));
  for (auto& res : results) {
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 405) << res->body;
    EXPECT_EQ(res->get_header_value("Allow"), "GET, HEAD");
    EXPECT_EQ(json::parse(res->body)["status"], 405);
  }
  // A body over the limit is refused before routing.
  auto big = client->Post("/nope", std::string(100000, 'b'), "text/plain");
  ASSERT_TRUE(big) << httplib::to_string(big.error());
  EXPECT_EQ(big->status, 413) << big->body;
  EXPECT_EQ(json::parse(big->body)["status"], 413);
  std::lock_guard lock(service_.mutex);
  EXPECT_TRUE(service_.user_ids_seen.empty());
}

TEST_F(HttpServerTest, HandlerExceptionIs500AndServerKeepsGoing) {
  StartServer();
  std::string error = ExpectJsonError("/users/boom", 500);
  EXPECT_NE(error.find("state store exploded"), std::string::npos) << error;
  auto res = NewClient()->Get("/users/alice");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST_F(HttpServerTest, MissingHandlerIs503) {
  auto status = HttpServer::Start({}, ApiRoutes({}), &server_);
  ASSERT_TRUE(status.ok()) << status.message;
  ExpectJsonError("/metrics", 503);
  ExpectJsonError("/users/alice", 503);
  ExpectJsonError("/top", 503);
  ExpectJsonError("/api/summary", 503);
  auto res = NewClient()->Get("/readyz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
}

TEST_F(HttpServerTest, TokenRequiredOnEveryEndpointButThePage) {
  HttpServerOptions options;
  options.token = "s3cret-token";
  StartServer(options);
  for (const char* path :
       {"/users/alice", "/top", "/metrics", "/healthz", "/readyz", "/api/summary", "/nope"}) {
    EXPECT_NE(ExpectJsonError(path, 401).find("missing"), std::string::npos) << path;
    EXPECT_NE(ExpectJsonError(path, 401, {{"Authorization", "Bearer wrong"}}).find("invalid"),
              std::string::npos)
        << path;
    ExpectJsonError(path, 401, {{"Authorization", "Bearer s3cret-toke"}});
    ExpectJsonError(path, 401, {{"Authorization", "Bearer s3cret-token2"}});
    ExpectJsonError(path, 401, {{"Authorization", "s3cret-token"}});
    ExpectJsonError(path, 401, {{"Authorization", "Basic s3cret-token"}});
  }
  // Auth comes before the method check: writes without a token are 401.
  auto client = NewClient();
  auto res = client->Post("/users/alice", "x", "text/plain");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer realm=\"clvstream\"");

  for (const char* scheme : {"Bearer ", "bearer "}) {
    res =
        NewClient()->Get("/users/alice", {{"Authorization", std::string(scheme) + "s3cret-token"}});
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << scheme;
  }
  // The page holds no data and asks the browser user for the token.
  res = NewClient()->Get("/");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST_F(HttpServerTest, OversizedRequestsGetJsonErrors) {
  StartServer();
  // Request line over the server's 8 KiB limit (kMaxHeaderBytes).
  auto res = NewClient()->Get("/users/" + std::string(9000, 'x'));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 414);
  EXPECT_EQ(json::parse(res->body)["status"], 414);
  // The server is still fine.
  res = NewClient()->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

// A raw TCP connection to the server, for clients that misbehave.
using RawConnection = testing::RawClient;

TEST_F(HttpServerTest, StalledClientsDoNotBlockOthersWhileThreadsRemain) {
  HttpServerOptions options;
  options.threads = 4;
  options.read_timeout_ms = 60000;  // the stalled clients stay for the whole test
  StartServer(options);
  // Two clients that start a request and never finish it, one that never
  // sends anything: they hold connections, never a handler thread.
  RawConnection half_line(server_->port()), half_headers(server_->port()), silent(server_->port());
  ASSERT_TRUE(half_line.connected() && half_headers.connected() && silent.connected());
  ASSERT_TRUE(half_line.Send("GET /heal"));
  ASSERT_TRUE(half_headers.Send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "));
  // Others are served, one after the other and concurrently.
  for (int i = 0; i < 20; ++i) {
    auto res = NewClient()->Get("/healthz");
    ASSERT_TRUE(res) << "request " << i;
    EXPECT_EQ(res->status, 200);
  }
}

TEST_F(HttpServerTest, StalledClientsAreDroppedAfterTheReadTimeout) {
  HttpServerOptions options;
  options.threads = 2;
  options.read_timeout_ms = 200;
  StartServer(options);
  // More stalled connections than handler threads: they only hold
  // connections, which the read timeout closes.
  std::vector<std::unique_ptr<RawConnection>> stalled;
  for (int i = 0; i < 5; ++i) {
    stalled.push_back(std::make_unique<RawConnection>(server_->port()));
    ASSERT_TRUE(stalled.back()->connected());
    ASSERT_TRUE(stalled.back()->Send("GET /users/"));
  }
  auto res = NewClient()->Get("/healthz");  // client waits up to 10 s
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
}

TEST_F(HttpServerTest, GarbageRequestsAre400AndDoNotStopTheServer) {
  StartServer();
  for (std::string_view garbage : {std::string_view("\x01\x02\x03 nonsense\r\n\r\n"),
                                   std::string_view("BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n"),
                                   std::string_view("GET\r\n\r\n")}) {
    RawConnection raw(server_->port());
    ASSERT_TRUE(raw.connected());
    ASSERT_TRUE(raw.Send(garbage));
  }
  auto res = NewClient()->Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(HttpServerStart, BindFailureNamesTheAddress) {
  FakeService service;
  std::unique_ptr<HttpServer> first;
  ASSERT_TRUE(HttpServer::Start({}, ApiRoutes(service.Handlers()), &first).ok());
  HttpServerOptions options;
  options.port = first->port();
  std::unique_ptr<HttpServer> second;
  auto status = HttpServer::Start(options, ApiRoutes(service.Handlers()), &second);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message.find("127.0.0.1:" + std::to_string(first->port())), std::string::npos)
      << status.message;
  EXPECT_EQ(second, nullptr);

  options.port = 70000;
  EXPECT_FALSE(HttpServer::Start(options, ApiRoutes(service.Handlers()), &second).ok());
  options.port = 0;
  options.threads = 0;
  EXPECT_FALSE(HttpServer::Start(options, ApiRoutes(service.Handlers()), &second).ok());
}

TEST(HttpServerStart, StopClosesThePortAndIsIdempotent) {
  FakeService service;
  std::unique_ptr<HttpServer> server;
  ASSERT_TRUE(HttpServer::Start({}, ApiRoutes(service.Handlers()), &server).ok());
  const int port = server->port();
  server->Stop();
  server->Stop();
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  auto res = client.Get("/healthz");
  EXPECT_FALSE(res) << "server still answering after Stop()";
  // An immediate Stop after Start does not hang either.
  ASSERT_TRUE(HttpServer::Start({}, ApiRoutes(service.Handlers()), &server).ok());
  server->Stop();
}

TEST(HttpServerConfig, PortZeroInConfigMeansDisabled) {
  config::HttpOptions http;
  EXPECT_FALSE(FromConfig(http).has_value());
  http.port = 8080;
  http.bind = "0.0.0.0";
  http.token = "t";
  auto options = FromConfig(http);
  ASSERT_TRUE(options.has_value());
  EXPECT_EQ(options->port, 8080);
  EXPECT_EQ(options->bind, "0.0.0.0");
  EXPECT_EQ(options->token, "t");
  // The server's own defaults are the config's defaults.
  const HttpServerOptions server_defaults;
  EXPECT_EQ(options->threads, server_defaults.threads);
  EXPECT_EQ(options->max_connections, server_defaults.max_connections);
  EXPECT_EQ(options->read_timeout_ms, server_defaults.read_timeout_ms);
  EXPECT_EQ(options->write_timeout_ms, server_defaults.write_timeout_ms);
  EXPECT_EQ(options->keep_alive_timeout_ms, server_defaults.keep_alive_timeout_ms);
  EXPECT_EQ(options->keep_alive_max_requests, server_defaults.keep_alive_max_requests);
}

TEST(HttpServerConfig, LimitsSetInTheConfigReachTheServer) {
  const config::LoadResult loaded =
      config::Load("",
                   {"http.port=8080", "http.threads=2", "http.max_connections=3",
                    "http.read_timeout_ms=150", "http.write_timeout_ms=250",
                    "http.keep_alive_timeout_ms=350", "http.keep_alive_max_requests=7"},
                   {});
  ASSERT_TRUE(loaded.ok()) << loaded.error;
  auto options = FromConfig(loaded.config->http);
  ASSERT_TRUE(options.has_value());
  EXPECT_EQ(options->threads, 2);
  EXPECT_EQ(options->max_connections, 3);
  EXPECT_EQ(options->read_timeout_ms, 150);
  EXPECT_EQ(options->write_timeout_ms, 250);
  EXPECT_EQ(options->keep_alive_timeout_ms, 350);
  EXPECT_EQ(options->keep_alive_max_requests, 7);
}

}  // namespace
}  // namespace clv::connectors
