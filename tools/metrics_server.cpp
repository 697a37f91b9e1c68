#include "metrics_server.hpp"

#include <creditguard/metrics.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <list>

namespace cg_cli {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

struct MetricsServer::State {
    State(asio::any_io_executor executor, std::function<std::string()> render)
        : acceptor(executor), render(std::move(render)) {}
    tcp::acceptor acceptor;
    std::function<std::string()> render;
    std::list<tcp::socket> connections;  // open scrapes, closed by stop()
    unsigned short port = 0;
    bool stopped = false;
};

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// One scrape per connection: read the request, answer it, close.
asio::awaitable<void> serve(std::shared_ptr<MetricsServer::State> state, std::list<tcp::socket>::iterator socket) {
    boost::beast::flat_buffer buffer;
    http::request_parser<http::empty_body> parser;
    parser.header_limit(8 * 1024);
    auto [read_ec, read_bytes] = co_await http::async_read(*socket, buffer, parser, use_tuple);
    if (!read_ec) {
        const auto& request = parser.get();
        http::response<http::string_body> response;
        response.version(11);
        response.keep_alive(false);
        if (request.method() != http::verb::get && request.method() != http::verb::head) {
            response.result(http::status::method_not_allowed);
            response.set(http::field::allow, "GET, HEAD");
        } else if (request.target() != "/metrics") {
            response.result(http::status::not_found);
            response.body() = "creditguard serves /metrics only\n";
        } else {
            response.result(http::status::ok);
            response.set(http::field::content_type, creditguard::MetricsText::content_type);
            if (request.method() == http::verb::get) response.body() = state->render();
        }
        response.prepare_payload();
        co_await http::async_write(*socket, response, use_tuple);
    }
    boost::system::error_code ignored;
    socket->shutdown(tcp::socket::shutdown_both, ignored);
    socket->close(ignored);
    if (!state->stopped) state->connections.erase(socket);
}

asio::awaitable<void> accept_loop(std::shared_ptr<MetricsServer::State> state) {
    for (;;) {
        auto [ec, socket] = co_await state->acceptor.async_accept(use_tuple);
        if (ec || state->stopped) co_return;
        state->connections.push_back(std::move(socket));
        asio::co_spawn(state->acceptor.get_executor(), serve(state, std::prev(state->connections.end())),
                       asio::detached);
    }
}

}  // namespace

MetricsServer::MetricsServer(asio::any_io_executor executor, unsigned short port, std::function<std::string()> render)
    : state_(std::make_shared<State>(executor, std::move(render))) {
    const tcp::endpoint endpoint(asio::ip::address_v4::loopback(), port);
    state_->acceptor.open(endpoint.protocol());
    state_->acceptor.set_option(tcp::acceptor::reuse_address(true));
    state_->acceptor.bind(endpoint);
    state_->acceptor.listen();
    state_->port = state_->acceptor.local_endpoint().port();
    asio::co_spawn(executor, accept_loop(state_), asio::detached);
}

MetricsServer::~MetricsServer() {
    stop();
}

unsigned short MetricsServer::port() const {
    return state_->port;
}

void MetricsServer::stop() {
    if (state_->stopped) return;
    state_->stopped = true;
    boost::system::error_code ignored;
    state_->acceptor.close(ignored);
    for (auto& socket : state_->connections)
        socket.close(ignored);
}

}  // namespace cg_cli
