/* Linked with every object of the listener's library and nothing of the signing core's
 * (signer/meson.build): a reference from the listener to core code is an undefined symbol
 * here, and the build fails. Run by the test suite, it says so. */
#include <stdio.h>

int main(void)
{
	puts("the listener links without the signing core");
	return 0;
}
