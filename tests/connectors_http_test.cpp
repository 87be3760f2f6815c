// The generic HTTP server (connectors/http_server.h) on a route table of its
// own: pattern matching and captures, 404/405 from the table, open routes
// under a token, what a handler sets, and malformed tables refused.
#include <httplib.h>

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "connectors/http_server.h"

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

}  // namespace
}  // namespace clv::connectors
