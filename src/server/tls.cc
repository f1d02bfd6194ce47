#include "server/tls.h"

#include <fstream>
#include <iterator>

#include <fmt/core.h>
#include <openssl/ssl.h>

#include "base/strings.h"

namespace sluice::server {

namespace {

int onServerName(SSL* ssl, int* alert, void* arg) {
  auto* port = static_cast<TlsPort*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) {
    return SSL_TLSEXT_ERR_OK;  // no SNI: the port's default certificate
  }
  asio::ssl::context* ctx = port->select(base::toLower(name));
  if (ctx == nullptr) {
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  SSL_set_SSL_CTX(ssl, ctx->native_handle());
  return SSL_TLSEXT_ERR_OK;
}

// ALPN for gRPC: h2 or nothing (gRPC needs HTTP/2).
int selectH2(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
             unsigned int inlen, void*) {
  for (unsigned int i = 0; i < inlen;) {
    const unsigned int n = in[i];
    if (i + 1 + n <= inlen && n == 2 && in[i + 1] == 'h' && in[i + 2] == '2') {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

}  // namespace

std::shared_ptr<asio::ssl::context> makeServerTlsContext(std::string_view cert_pem,
                                                         std::string_view key_pem, error_code& ec) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  ctx->use_certificate_chain(asio::buffer(cert_pem.data(), cert_pem.size()), ec);
  if (!ec) {
    ctx->use_private_key(asio::buffer(key_pem.data(), key_pem.size()), asio::ssl::context::pem, ec);
  }
  return ec ? nullptr : ctx;
}

base::Result<std::shared_ptr<asio::ssl::context>> makeGrpcTlsContext(const std::string& cert_file,
                                                                     const std::string& key_file) {
  auto read = [](const std::string& path, std::string& out) {
    std::ifstream in(path, std::ios::binary);
    out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return in.good() || in.eof();
  };
  std::string cert, key;
  if (!read(cert_file, cert) || cert.empty()) {
    return base::Error{fmt::format("--tls-cert-file {}: cannot be read", cert_file)};
  }
  if (!read(key_file, key) || key.empty()) {
    return base::Error{fmt::format("--tls-key-file {}: cannot be read", key_file)};
  }
  error_code ec;
  auto ctx = makeServerTlsContext(cert, key, ec);
  if (!ctx) {
    return base::Error{fmt::format("the gRPC certificate does not load: {}", ec.message())};
  }
  SSL_CTX_set_alpn_select_cb(ctx->native_handle(), selectH2, nullptr);
  return ctx;
}

TlsPort::TlsPort(std::vector<Entry> entries) : entries_(std::move(entries)) {
  // Without SNI, the listener without a hostname answers; else the most specific one.
  initial_ = entries_.front().context;
  for (const auto& e : entries_) {
    if (!e.hostname) {
      initial_ = e.context;
    }
  }
  for (const auto& e : entries_) {
    SSL_CTX_set_tlsext_servername_callback(e.context->native_handle(), onServerName);
    SSL_CTX_set_tlsext_servername_arg(e.context->native_handle(), this);
  }
}

asio::ssl::context* TlsPort::select(std::string_view name) {
  for (const auto& e : entries_) {  // already in selection order
    if (!e.hostname) {
      return e.context.get();
    }
    const std::string& h = *e.hostname;
    if (h.size() > 2 && h[0] == '*') {
      std::string_view suffix = std::string_view(h).substr(1);
      if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix) {
        return e.context.get();
      }
    } else if (name == h) {
      return e.context.get();
    }
  }
  return nullptr;
}

std::shared_ptr<const TlsConfig> buildTls(const router::RouteTable& table,
                                          std::vector<std::string>& errors) {
  auto config = std::make_shared<TlsConfig>();
  for (const auto& [port, listeners] : table.ports) {
    std::vector<TlsPort::Entry> entries;
    for (const auto& l : listeners) {
      if (!l->tls) {
        continue;
      }
      error_code ec;
      auto ctx = makeServerTlsContext(l->cert_pem, l->key_pem, ec);
      if (!ctx) {
        errors.push_back(fmt::format("Gateway {} listener {}: cannot load the certificate: {}",
                                     l->gateway, l->name, ec.message()));
        continue;
      }
      entries.push_back({l->hostname, std::move(ctx)});
    }
    if (!entries.empty()) {
      config->ports[port] = std::make_shared<TlsPort>(std::move(entries));
    }
  }
  return config;
}

}  // namespace sluice::server
