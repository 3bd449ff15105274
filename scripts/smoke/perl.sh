#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Workload: perl. Hashes (built, grown, deleted from), regexes with captures
# and substitutions, sorting, string building, nested data, sprintf/pack.
# shellcheck source=lib.sh
. "$SMOKE_DIR/lib.sh"

cat >work.pl <<'PL'
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use List::Util qw(sum max);

# A deterministic pseudo-random generator (no dependence on perl's rand).
my $seed = 12345;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return $seed; }

my $ctx = Digest::MD5->new;
my %words;
my @lines;
for my $i (1 .. 60000) {
    my $len = 3 + rnd() % 12;
    my $w = join '', map { chr(97 + rnd() % 26) } 1 .. $len;
    $words{$w}++;
    push @lines, sprintf("%06d %s %s=%d;", $i, $w, uc(substr($w, 0, 2)), rnd() % 1000);
}
print "distinct words: ", scalar(keys %words), "\n";

# Regexes: captures, global matches, substitutions, tr.
my (%by_prefix, $vowels, $subs);
for my $l (@lines) {
    if ($l =~ /^(\d+) ([a-z]+) ([A-Z]{2})=(\d+);$/) {
        push @{ $by_prefix{$3} }, [$1, $2, $4];
    }
    $vowels += () = $l =~ /[aeiou]/g;
    (my $c = $l) =~ s/([aeiou])([^aeiou ])/$2$1/g;
    $subs += ($c =~ tr/a-z//);
    $ctx->add($c);
}
print "prefixes: ", scalar(keys %by_prefix), " vowels: $vowels letters: $subs\n";

# Sorting: numeric, string, multi-key, Schwartzian transform.
my @top = (sort { $words{$b} <=> $words{$a} || $a cmp $b } keys %words)[0 .. 9];
print "top words: @top\n";
my @st = map { $_->[1] } sort { $a->[0] <=> $b->[0] || $a->[1] cmp $b->[1] }
    map { [length($_), $_] } keys %words;
print "shortest: @st[0..4] longest: @st[-3..-1]\n";
for my $p (sort keys %by_prefix) {
    my @rows = sort { $a->[2] <=> $b->[2] || $a->[0] <=> $b->[0] } @{ $by_prefix{$p} };
    $ctx->add(join(',', map { "@$_" } @rows[0 .. ($#rows < 5 ? $#rows : 5)]));
}

# String building: repeated appends, join, reverse, sprintf, pack/unpack.
my $s = '';
for my $i (1 .. 200000) { $s .= chr(65 + $i % 26); $s .= $i if $i % 1000 == 0; }
my $packed = pack('N*', map { rnd() } 1 .. 50000);
my @un = unpack('N*', $packed);
print "string length: ", length($s), " sum: ", sum(@un) % 1000003, " max: ", max(@un), "\n";
$ctx->add(scalar reverse $s);

# Grow and shrink a big hash of arrays of hashes.
my %h;
for my $i (1 .. 100000) { $h{"k$i"} = { n => $i, l => [($i) x ($i % 8)], s => "v" x ($i % 50) }; }
delete $h{"k$_"} for grep { $_ % 3 } 1 .. 100000;
my $total = 0;
$total += $h{$_}{n} + @{ $h{$_}{l} } + length($h{$_}{s}) for sort keys %h;
print "remaining: ", scalar(keys %h), " total: $total\n";
print "digest: ", $ctx->hexdigest, "\n";
PL

PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0 perl work.pl
