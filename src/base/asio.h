#pragma once

// The one way to include Asio and Beast. <utility> must precede awaitable.hpp with g++ 12 and
// Boost 1.74 (std::exchange). Asio and Beast are compiled once, in asio_impl.cc.
#include <chrono>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

namespace sluice {
namespace asio = boost::asio;
namespace beast = boost::beast;
using error_code = boost::system::error_code;

// Every io_context in the process is a plain asio::io_context, so sockets, timers and
// coroutines name its executor type directly instead of the type-erased any_io_executor: no
// executor is copied, moved or called through a function table on the request path.
using Executor = asio::io_context::executor_type;

// asio::ip::tcp with its socket, acceptor and resolver on that executor.
struct tcp : boost::asio::ip::tcp {
  using socket = asio::basic_stream_socket<boost::asio::ip::tcp, Executor>;
  using acceptor = asio::basic_socket_acceptor<boost::asio::ip::tcp, Executor>;
  using resolver = asio::ip::basic_resolver<boost::asio::ip::tcp, Executor>;
};
using TcpStream = beast::basic_stream<boost::asio::ip::tcp, Executor>;
using SteadyTimer =
    asio::basic_waitable_timer<std::chrono::steady_clock,
                               asio::wait_traits<std::chrono::steady_clock>, Executor>;
inline constexpr asio::use_awaitable_t<Executor> use_awaitable{};
template <class T = void>
using awaitable = boost::asio::awaitable<T, Executor>;
}  // namespace sluice
