#include "k8s/kubeconfig.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "base/strings.h"

namespace sluice::k8s {
namespace {

std::string tempDir() {
  auto dir = std::filesystem::temp_directory_path() /
             ("sluice-kc-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
              "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::create_directories(dir);
  return dir.string();
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

constexpr const char* kConfig = R"(apiVersion: v1
kind: Config
current-context: a
clusters:
- name: c1
  cluster: {server: "https://10.0.0.1:6443", certificate-authority: ca.crt}
- name: c2
  cluster: {server: "https://[::1]", certificate-authority-data: "UEVNCg==", tls-server-name: api}
contexts:
- name: a
  context: {cluster: c1, user: u1, namespace: team}
- name: b
  context: {cluster: c2, user: u2}
users:
- name: u1
  user: {token: abc}
- name: u2
  user: {tokenFile: token}
)";

TEST(Kubeconfig, CurrentContextWithCaFileAndToken) {
  auto dir = tempDir();
  write(dir + "/ca.crt", "CA PEM");
  auto a = parseKubeconfig(kConfig, dir, "");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "10.0.0.1");
  EXPECT_EQ(a->port, "6443");
  EXPECT_EQ(a->ca_pem, "CA PEM");
  EXPECT_EQ(a->token, "abc");
  EXPECT_EQ(a->ns, "team");
  EXPECT_FALSE(a->insecure_skip_verify);
}

TEST(Kubeconfig, NamedContextWithCaDataTokenFileAndIpv6) {
  auto a = parseKubeconfig(kConfig, "/etc/kube", "b");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, "443");
  EXPECT_EQ(a->ca_pem, "PEM\n");
  EXPECT_EQ(a->token_file, "/etc/kube/token");
  EXPECT_EQ(a->tls_server_name, "api");
}

TEST(Kubeconfig, ErrorsNameTheField) {
  auto missing = parseKubeconfig(kConfig, "/nonexistent", "a");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("clusters[c1].cluster.certificate-authority"),
            std::string::npos)
      << missing.error().message;
  auto no_ctx = parseKubeconfig(kConfig, "", "zzz");
  ASSERT_FALSE(no_ctx);
  EXPECT_NE(no_ctx.error().message.find("no context named \"zzz\""), std::string::npos);
  auto plain = parseKubeconfig(
      "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
      "clusters: [{name: c, cluster: {server: 'http://h:80'}}]\n",
      "", "");
  ASSERT_FALSE(plain);
  EXPECT_NE(plain.error().message.find("must be an https:// URL"), std::string::npos);
  auto exec = parseKubeconfig(
      "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
      "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
      "users: [{name: u, user: {exec: {command: aws}}}]\n",
      "", "");
  ASSERT_FALSE(exec);
  EXPECT_NE(exec.error().message.find("exec"), std::string::npos);
  EXPECT_FALSE(parseKubeconfig("[1, 2", "", ""));
  EXPECT_FALSE(parseKubeconfig("42", "", ""));
}

TEST(Kubeconfig, InClusterFromServiceAccountFiles) {
  auto dir = tempDir();
  write(dir + "/token", "tok\n");
  write(dir + "/ca.crt", "CA");
  write(dir + "/namespace", "sluice-system\n");
  auto env = [](const char* name) -> std::string {
    std::string n = name;
    return n == "KUBERNETES_SERVICE_HOST"   ? "10.96.0.1"
           : n == "KUBERNETES_SERVICE_PORT" ? "443"
                                            : "";
  };
  auto a = inClusterAccess(env, dir);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->server, "https://10.96.0.1:443");
  EXPECT_EQ(a->token_file, dir + "/token");
  EXPECT_EQ(a->ca_pem, "CA");
  EXPECT_EQ(a->ns, "sluice-system");
  EXPECT_FALSE(inClusterAccess([](const char*) { return std::string(); }, dir));
  EXPECT_FALSE(inClusterAccess(env, dir + "/missing"));
}

}  // namespace
}  // namespace sluice::k8s
