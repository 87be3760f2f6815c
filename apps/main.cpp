// clv: the clvstream executable. See `clv --help`.
#include <cstdio>

int main(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::puts("clv: under construction");
  return 0;
}
