#include "mayhem/cli/run.hpp"

int main(int argc, char** argv) {
  return mayhem::cli::main(argc, argv);
}
