/* berth's bridge to ISA-L's igzip inflate (Debian's libisal): the state struct is only ever
 * touched here, compiled against the installed header, so its layout is never guessed. */
#include <isa-l/igzip_lib.h>
#include <stdint.h>
#include <stdlib.h>

/* A gzip inflate state, or NULL when out of memory. */
void *berth_isal_gzip_new(void)
{
	struct inflate_state *s = malloc(sizeof(*s));
	if (s != NULL) {
		isal_inflate_init(s);
		s->crc_flag = ISAL_GZIP;
	}
	return s;
}

/* Ready for the next gzip member. */
void berth_isal_gzip_reset(void *state)
{
	struct inflate_state *s = state;
	isal_inflate_reset(s);
	s->crc_flag = ISAL_GZIP;
}

void berth_isal_free(void *state)
{
	free(state);
}

/* Inflates from `in` into `out`; says how much of each was used and whether the member
 * ended (its trailer checked). Returns ISA-L's status: 0 or a negative error. */
int berth_isal_inflate(void *state, const uint8_t *in, uint32_t in_len, uint8_t *out,
		       uint32_t out_len, uint32_t *consumed, uint32_t *produced, int *finished)
{
	struct inflate_state *s = state;
	int ret;

	s->next_in = (uint8_t *)in;
	s->avail_in = in_len;
	s->next_out = out;
	s->avail_out = out_len;
	ret = isal_inflate(s);
	*consumed = in_len - s->avail_in;
	*produced = out_len - s->avail_out;
	*finished = s->block_state == ISAL_BLOCK_FINISH;
	return ret;
}
