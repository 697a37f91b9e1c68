// `creditguard run --metrics-port P`: serves GET /metrics (Prometheus text format) on 127.0.0.1 while a run goes.
#pragma once

#include <boost/asio/any_io_executor.hpp>

#include <functional>
#include <memory>
#include <string>

namespace cg_cli {

class MetricsServer {
public:
    /// Listens on 127.0.0.1:`port` (0: a free port); each scrape calls `render` on the executor's thread.
    /// Throws std::system_error when the port cannot be bound.
    MetricsServer(boost::asio::any_io_executor executor, unsigned short port, std::function<std::string()> render);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    unsigned short port() const;
    /// Stops listening and closes every connection, so that the io_context can run out of work.
    void stop();

    struct State;

private:
    std::shared_ptr<State> state_;
};

}  // namespace cg_cli
