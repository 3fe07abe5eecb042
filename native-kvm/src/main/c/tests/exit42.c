/* exit42: checks that main's return value becomes the VM's exit code. */
#include "vmfork.h"

int main(void)
{
    vmf_printf("exiting with 42\n");
    return 42;
}
