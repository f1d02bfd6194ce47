// Separate compilation of Asio and Beast: every other translation unit sees only declarations.
#include <utility>

#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
