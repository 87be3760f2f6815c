// The generic HTTP server (connectors/http_server.h) on a route table of its
// own: pattern matching and captures, 404/405 from the table, open routes
// under a token, what a handler sets, and malformed tables refused; and the
// HTTP/1.1 a client relies on, seen through raw sockets: pipelining,
// Connection: close, body limits and framing errors, and that idle,
// half-open or dripping connections (slowloris) cannot lock others out.
#include <httplib.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "connectors/http_server.h"
#include "tests/test_support.h"

namespace clv::connectors {
namespace {

using nlohmann::json;

HttpRoute Route(std::string method, std::string path, HttpHandler handler, bool open = false) {
  HttpRoute route;
  route.method = std::move(method);
  route.path = path;
  route.help = path;
  route.open = open;
  route.handler = std::move(handler);
  return route;
}

// Echoes what the server handed over.
void Echo(const HttpRequest& req, HttpResponse* res) {
  const std::string* q = req.param("q");
  res->Json(json{{"method", std::string(req.method)},
                 {"path", std::string(req.path)},
                 {"capture", std::string(req.capture)},
                 {"q", q ? *q : "-"}}
                .dump());
}

class HttpRouteTableTest : public ::testing::Test {
 protected:
  void Start(HttpServerOptions options = {}) {
    std::vector<HttpRoute> routes;
    routes.push_back(Route("GET", "/files/{name}", Echo));
    routes.push_back(Route("GET", "/items", Echo));
    routes.push_back(Route("DELETE", "/items", Echo));
    routes.push_back(Route("GET", "/page", Echo, /*open=*/true));
    routes.push_back(Route("GET", "/teapot", [](const HttpRequest&, HttpResponse* res) {
      res->status = 418;
      res->headers.emplace_back("X-Brew", "earl grey");
      res->Text("short and stout", "text/plain");
    }));
    auto status = HttpServer::Start(options, std::move(routes), &server_);
    ASSERT_TRUE(status.ok()) << status.message;
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_url_encode(false);
  }
  json GetJson(const std::string& path, int want_status) {
    auto res = client_->Get(path);
    if (!res) {
      ADD_FAILURE() << path << ": no response";
      return {};
    }
    EXPECT_EQ(res->status, want_status) << path << " -> " << res->body;
    return json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  }

  static void ExpectNotAllowed(const httplib::Result& res, const std::string& allow) {
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 405) << res->body;
    EXPECT_EQ(res->get_header_value("Allow"), allow);
    EXPECT_EQ(res->get_header_value("Connection"), "close");
  }

  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpRouteTableTest, PatternsMatchAndCaptureTheRawRest) {
  Start();
  json body = GetJson("/files/a%20b/c?q=1", 200);
  EXPECT_EQ(body["capture"], "a%20b/c");
  EXPECT_EQ(body["path"], "/files/a%20b/c");
  EXPECT_EQ(body["q"], "1");
  EXPECT_EQ(GetJson("/files/", 200)["capture"], "");
  EXPECT_EQ(GetJson("/items", 200)["capture"], "");
  // Exact routes match only themselves; the 404 lists the endpoints.
  const std::string error = GetJson("/items/1", 404).value("error", "");
  EXPECT_NE(error.find("/items/1"), std::string::npos) << error;
  EXPECT_NE(error.find("/files/{name}, /items"), std::string::npos) << error;
  GetJson("/files", 404);
}

TEST_F(HttpRouteTableTest, MethodsComeFromTheTable) {
  Start();
  auto deleted = client_->Delete("/items");
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->status, 200);
  EXPECT_EQ(json::parse(deleted->body)["method"], "DELETE");
  auto head = client_->Head("/items");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  ExpectNotAllowed(client_->Put("/items", "x", "text/plain"), "GET, HEAD, DELETE");
  ExpectNotAllowed(client_->Delete("/page"), "GET, HEAD");
  // A method no route serves, on a path no route serves: 405 with every method.
  ExpectNotAllowed(client_->Post("/nowhere", "x", "text/plain"), "GET, HEAD, DELETE");
  // A method the table serves, on an unknown path: 404.
  auto gone = client_->Delete("/nowhere");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);
}

TEST_F(HttpRouteTableTest, HandlerSetsStatusHeadersAndType) {
  Start();
  auto res = client_->Get("/teapot");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 418);
  EXPECT_EQ(res->body, "short and stout");
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain");
  EXPECT_EQ(res->get_header_value("X-Brew"), "earl grey");
  EXPECT_EQ(res->get_header_value("Cache-Control"), "no-store");
}

TEST_F(HttpRouteTableTest, OnlyOpenRoutesSkipTheToken) {
  HttpServerOptions options;
  options.token = "t0ken";
  Start(options);
  GetJson("/page", 200);
  GetJson("/items", 401);
  GetJson("/nowhere", 401);
  auto res = client_->Get("/items", {{"Authorization", "Bearer t0ken"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  auto wrong_method = client_->Delete("/page");
  ASSERT_TRUE(wrong_method);
  EXPECT_EQ(wrong_method->status, 401);
}

TEST(HttpRouteTable, MalformedTablesAreRefusedNamingTheRoute) {
  std::unique_ptr<HttpServer> server;
  for (const char* path : {"items", "/a/{id}/b", "/a{id}", "/a/{}", "/a/{x}{y}"}) {
    Status status = HttpServer::Start({}, {Route("GET", path, Echo)}, &server);
    EXPECT_FALSE(status.ok()) << path;
    EXPECT_NE(status.message.find(path), std::string::npos) << status.message;
  }
  Status status = HttpServer::Start({}, {Route("GET", "/x", nullptr)}, &server);
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(server, nullptr);
}

// ------------------------------------------------------------ raw HTTP/1.1 --

// One TCP connection to the server, for what httplib::Client cannot show.
using testing::RawClient;

struct RawResponse {
  int status = 0;
  std::string headers;  // raw header block, lower-cased names
  std::string body;
  bool Has(const std::string& header_line) const {
    return headers.find(header_line) != std::string::npos;
  }
};

// Splits a byte stream into the responses it holds (Content-Length framing).
std::vector<RawResponse> SplitResponses(std::string_view bytes) {
  std::vector<RawResponse> responses;
  while (!bytes.empty()) {
    const size_t end = bytes.find("\r\n\r\n");
    if (end == std::string_view::npos || !bytes.starts_with("HTTP/1.1 ")) break;
    RawResponse response;
    response.status = std::stoi(std::string(bytes.substr(9, 3)));
    for (char c : bytes.substr(0, end)) {
      response.headers += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    size_t length = 0;
    const size_t at = response.headers.find("content-length: ");
    if (at != std::string::npos) length = std::stoul(response.headers.substr(at + 16));
    if (bytes.size() < end + 4 + length) break;
    response.body = std::string(bytes.substr(end + 4, length));
    bytes.remove_prefix(end + 4 + length);
    responses.push_back(std::move(response));
  }
  return responses;
}

// Pipelined requests, one of them with a body, all answered in order on one
// connection; the last asks to close and the server does.
TEST_F(HttpRouteTableTest, PipelinedRequestsAreAllAnsweredInOrder) {
  Start();
  RawClient raw(server_->port());
  ASSERT_TRUE(raw.connected());
  ASSERT_TRUE(raw.Send(
      "GET /items?q=first HTTP/1.1\r\nHost: t\r\n\r\n"
      "DELETE /items?q=second HTTP/1.1\r\nHost: t\r\nContent-Length: 15\r\n\r\nGET /teapot x\r\n"
      "GET /files/third HTTP/1.1\r\nHost: t\r\n\r\n"
      "GET /items?q=fourth HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  // The DELETE closes the connection (other methods than GET/HEAD do), so
  // send the rest again on a second connection.
  ASSERT_TRUE(raw.ReadUntilClosed());
  auto responses = SplitResponses(raw.received());
  ASSERT_EQ(responses.size(), 2u) << raw.received();
  EXPECT_EQ(json::parse(responses[0].body)["q"], "first");
  EXPECT_EQ(json::parse(responses[1].body)["q"], "second");  // its body was not a request
  EXPECT_TRUE(responses[1].Has("connection: close"));

  RawClient again(server_->port());
  ASSERT_TRUE(
      again.Send("GET /items?q=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /items?q=2 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody"
                 "HEAD /items?q=3 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /files/x%20y HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  ASSERT_TRUE(again.ReadUntilClosed());
  // HEAD has no body: split by hand around it.
  const std::string& bytes = again.received();
  auto first_two = SplitResponses(bytes);
  ASSERT_GE(first_two.size(), 2u) << bytes;
  EXPECT_EQ(json::parse(first_two[0].body)["q"], "1");
  EXPECT_EQ(json::parse(first_two[1].body)["q"], "2");
  const size_t head_at = bytes.find("HTTP/1.1", bytes.find(first_two[1].body));
  const size_t last_at = bytes.find("\r\n\r\n", head_at) + 4;
  auto last = SplitResponses(std::string_view(bytes).substr(last_at));
  ASSERT_EQ(last.size(), 1u) << bytes;
  EXPECT_EQ(json::parse(last[0].body)["capture"], "x%20y");
  EXPECT_TRUE(last[0].Has("connection: close"));
  EXPECT_FALSE(first_two[0].Has("connection: close"));
}

TEST_F(HttpRouteTableTest, ConnectionCloseAndHttp10AreHonoured) {
  Start();
  for (const char* request : {"GET /items HTTP/1.1\r\nHost: t\r\nConnection: Close\r\n\r\n",
                              "GET /items HTTP/1.0\r\n\r\n"}) {
    RawClient raw(server_->port());
    ASSERT_TRUE(raw.Send(request));
    ASSERT_TRUE(raw.ReadUntilClosed()) << request << "the server kept the connection open";
    auto responses = SplitResponses(raw.received());
    ASSERT_EQ(responses.size(), 1u) << raw.received();
    EXPECT_EQ(responses[0].status, 200);
    EXPECT_TRUE(responses[0].Has("connection: close")) << responses[0].headers;
  }
  // HTTP/1.0 with keep-alive: two answers on one connection.
  RawClient raw(server_->port());
  ASSERT_TRUE(
      raw.Send("GET /items HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
               "GET /items HTTP/1.0\r\n\r\n"));
  ASSERT_TRUE(raw.ReadUntilClosed());
  auto responses = SplitResponses(raw.received());
  ASSERT_EQ(responses.size(), 2u) << raw.received();
  EXPECT_TRUE(responses[0].Has("connection: keep-alive"));
  EXPECT_TRUE(responses[1].Has("connection: close"));
}

// A body over max_body_bytes is 413 and a Content-Length that is not a
// decimal number is 400: answered with a JSON error, then the connection is
// closed (its framing cannot be trusted); the server keeps serving.
TEST_F(HttpRouteTableTest, OversizedBodiesAre413AndBadContentLengthsAre400) {
  HttpServerOptions options;
  options.max_body_bytes = 1000;
  Start(options);
  auto expect = [&](const std::string& request, int status, const std::string& says) {
    RawClient raw(server_->port());
    ASSERT_TRUE(raw.Send(request));
    ASSERT_TRUE(raw.ReadUntilClosed()) << request;
    auto responses = SplitResponses(raw.received());
    ASSERT_EQ(responses.size(), 1u) << request << " -> " << raw.received();
    EXPECT_EQ(responses[0].status, status) << request << " -> " << responses[0].body;
    EXPECT_TRUE(responses[0].Has("connection: close"));
    if (status < 400) return;
    const json body = json::parse(responses[0].body, nullptr, /*allow_exceptions=*/false);
    EXPECT_EQ(body.value("status", 0), status) << responses[0].body;
    EXPECT_NE(body.value("error", "").find(says), std::string::npos) << responses[0].body;
  };
  const std::string get = "GET /items HTTP/1.1\r\nHost: t\r\n";
  expect(get + "Content-Length: 1001\r\n\r\n" + std::string(1001, 'b'), 413, "over the limit");
  expect("DELETE /items HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413, "99999999 bytes");
  for (const char* length :
       {"-1", "abc", "1.5", "12 34", "", "0x10", "+5", "99999999999999999999999"}) {
    expect(get + "Content-Length: " + length + "\r\n\r\n", 400, "Content-Length");
  }
  expect(get + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "conflicting");
  expect(get + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, "Transfer-Encoding");
  expect("GET /items HTTP/2.0\r\n\r\n", 505, "HTTP version");
  expect("GET items HTTP/1.1\r\n\r\n", 400, "request target");
  expect(get + "Bad Header: x\r\n\r\n", 400, "malformed header");
  expect(get + "X-Big: " + std::string(9000, 'h') + "\r\n\r\n", 431, "headers longer");
  // A body within the limit is read and dropped.
  expect(get + "Content-Length: 1000\r\nConnection: close\r\n\r\n" + std::string(1000, 'b'), 200,
         "");
  auto res = client_->Get("/items");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

// Hundreds of connections that send nothing, half a request line or half
// the headers (slowloris) do not keep a new client from being answered.
TEST_F(HttpRouteTableTest, HalfOpenConnectionsDoNotBlockOthers) {
  HttpServerOptions options;
  options.threads = 2;
  options.read_timeout_ms = 60000;  // they all stay for the whole test
  Start(options);
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 300; ++i) {
    idle.push_back(std::make_unique<RawClient>(server_->port()));
    ASSERT_TRUE(idle.back()->connected()) << i;
    if (i % 3 == 1) {
      ASSERT_TRUE(idle.back()->Send("GET /ite"));
    } else if (i % 3 == 2) {
      ASSERT_TRUE(idle.back()->Send("GET /items HTTP/1.1\r\nHost: t\r\nX-Slow: "));
    }
  }
  client_->set_connection_timeout(10, 0);
  client_->set_read_timeout(10, 0);
  for (int i = 0; i < 5; ++i) {
    auto res = client_->Get("/items");
    ASSERT_TRUE(res) << "request " << i << ": " << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 200);
  }
  // None of them was answered or dropped: they are merely waiting.
  EXPECT_FALSE(idle.front()->ClosedByServer(0));
}

// A request must arrive whole within read_timeout_ms of its first byte: a
// client that drips header bytes is closed although it never goes quiet,
// and so is one that sends nothing or stops in the middle.
TEST_F(HttpRouteTableTest, DrippingAndSilentClientsAreClosedByTheReadTimeout) {
  HttpServerOptions options;
  options.read_timeout_ms = 300;
  Start(options);
  RawClient silent(server_->port());
  RawClient partial(server_->port());
  RawClient dripping(server_->port());
  ASSERT_TRUE(partial.Send("GET /items HTTP/1.1\r\n"));
  ASSERT_TRUE(dripping.Send("GET /items HTTP/1.1\r\n"));
  bool dripping_closed = false;
  for (int i = 0; i < 200 && !dripping_closed; ++i) {  // up to about 10 s
    dripping.Send("X: y\r\n");
    dripping_closed = dripping.ClosedByServer(50);
  }
  EXPECT_TRUE(dripping_closed) << "a dripping client held its connection for 10 s";
  EXPECT_TRUE(silent.ReadUntilClosed());
  EXPECT_TRUE(partial.ReadUntilClosed());
  EXPECT_TRUE(silent.received().empty());
}

// At max_connections, a new connection closes the one idle the longest, so
// the newest client is served; the connections left open are the newest.
TEST_F(HttpRouteTableTest, ConnectionLimitClosesTheLongestIdle) {
  HttpServerOptions options;
  options.max_connections = 8;
  options.read_timeout_ms = 60000;
  Start(options);
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 20; ++i) {
    idle.push_back(std::make_unique<RawClient>(server_->port()));
    ASSERT_TRUE(idle.back()->connected());
    // Let the server accept them one by one, in order.
    for (int wait = 0; wait < 100 && i >= 8 && !idle[i - 8]->ClosedByServer(0); ++wait) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  auto res = client_->Get("/items");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  int closed = 0;
  for (auto& connection : idle) closed += connection->ClosedByServer(100) ? 1 : 0;
  EXPECT_GE(closed, 12);  // 20 + 1 connections for 8 places
  EXPECT_LE(closed, 13);
  EXPECT_TRUE(idle.front()->ClosedByServer(0));
  EXPECT_FALSE(idle.back()->ClosedByServer(0));
}

}  // namespace
}  // namespace clv::connectors
