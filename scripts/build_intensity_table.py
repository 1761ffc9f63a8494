"""Build ``hpsearch_budget/carbon/data/grid_intensity.csv`` from data that registry packages ship.

Run it again to refresh the table (the output is deterministic for given inputs)::

    python scripts/build_intensity_table.py            # downloads the two wheels with pip
    python scripts/build_intensity_table.py --wheels DIR   # or reads wheels already in DIR

Inputs (pinned; each is a wheel fetched with ``pip download --no-deps``):

* ``codecarbon==3.3.2`` (mlco2/codecarbon), files read:

  - ``codecarbon/data/private_infra/global_energy_mix.json``: per-country (ISO alpha-3)
    electricity data from Our World in Data (Ember / Energy Institute). We take its
    ``carbon_intensity`` field (g CO2e/kWh, life-cycle, OWID's ``carbon_intensity_elec``) and its
    ``year``. Where that field is missing or 0 but the country generates electricity, we derive
    it the way codecarbon does: the generation-weighted mean of the per-source factors of
    ``carbon_intensity_per_source.json`` over the ``*_TWh`` fields.
  - ``codecarbon/data/private_infra/carbon_intensity_per_source.json``: the per-source factors
    above, and ``world_average`` (475 g/kWh, IEA Global Energy & CO2 Status Report 2019, i.e.
    2018 data): the library's default intensity.
  - ``codecarbon/data/cloud/impact.csv``: Google Cloud regions, Google's published
    location-based grid intensity (g CO2e/kWh) for 2023 (codecarbon PR #610 copied Google's
    2023 yearly values). The region ``me-cenrtal1`` is a typo there; we write ``me-central1``.
  - ``codecarbon/data/private_infra/2023/usa_emissions.json``: EPA eGRID2023 state CO2e output
    emission rates (lbs/MWh) for AWS / Azure regions in the United States.
  - ``codecarbon/data/private_infra/2023/canada_energy_mix.json``: provincial generation mix
    (percent) for Canadian regions; g/kWh = the share-weighted mean of the per-source factors
    (naturalGas -> natural_gas, hydro -> hydroelectricity; tidal and "other" have no factor and
    count as 0, which makes the figure a lower bound where they matter).
  - ``codecarbon/data/private_infra/nordic_emissions.json``: ENTSO-E bidding-zone factors
    (2025) for Swedish and Norwegian regions.

* ``pycountry==26.2.16``, file ``pycountry/databases/iso3166-1.json`` (Debian iso-codes): the
  ISO 3166-1 alpha-2 code of each alpha-3 country, so ``FR`` and ``FRA`` both resolve.

AWS and Azure publish no per-region grid intensity, so each of their main regions is mapped below
(``_AWS`` / ``_AZURE``) to the location of its data centres (from the providers' region lists) and
takes that location's figure: a US state (eGRID), a Canadian province, a Nordic bidding zone, or
else the country (OWID). That is location-based accounting, the same fallback codecarbon uses.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpsearch_budget.units import G_PER_KG, KG_PER_LB  # noqa: E402

CODECARBON = "codecarbon==3.3.2"
PYCOUNTRY = "pycountry==26.2.16"
OUT = REPO / "hpsearch_budget" / "carbon" / "data" / "grid_intensity.csv"
COLUMNS = ["code", "alias", "kind", "provider", "name", "country", "g_per_kwh", "source", "year"]

GCP_YEAR = 2023  # Google's yearly dataset that codecarbon 3.3.2 ships (see module docstring)
WORLD_YEAR = 2018  # the IEA report of 2019 gives 2018's global average
CC = "via codecarbon 3.3.2"

# Location of each region: (name, country alpha-3, sub-national key or None). The key is a US
# state (eGRID), "ca:<province>" or a Nordic bidding zone ("SE3", "NO1").
_AWS: dict[str, tuple[str, str, str | None]] = {
    "us-east-1": ("US East (N. Virginia)", "USA", "virginia"),
    "us-east-2": ("US East (Ohio)", "USA", "ohio"),
    "us-west-1": ("US West (N. California)", "USA", "california"),
    "us-west-2": ("US West (Oregon)", "USA", "oregon"),
    "ca-central-1": ("Canada (Central, Montreal)", "CAN", "ca:quebec"),
    "ca-west-1": ("Canada West (Calgary)", "CAN", "ca:alberta"),
    "sa-east-1": ("South America (Sao Paulo)", "BRA", None),
    "eu-west-1": ("Europe (Ireland)", "IRL", None),
    "eu-west-2": ("Europe (London)", "GBR", None),
    "eu-west-3": ("Europe (Paris)", "FRA", None),
    "eu-central-1": ("Europe (Frankfurt)", "DEU", None),
    "eu-central-2": ("Europe (Zurich)", "CHE", None),
    "eu-north-1": ("Europe (Stockholm)", "SWE", "SE3"),
    "eu-south-1": ("Europe (Milan)", "ITA", None),
    "eu-south-2": ("Europe (Spain)", "ESP", None),
    "ap-northeast-1": ("Asia Pacific (Tokyo)", "JPN", None),
    "ap-northeast-2": ("Asia Pacific (Seoul)", "KOR", None),
    "ap-northeast-3": ("Asia Pacific (Osaka)", "JPN", None),
    "ap-south-1": ("Asia Pacific (Mumbai)", "IND", None),
    "ap-southeast-1": ("Asia Pacific (Singapore)", "SGP", None),
    "ap-southeast-2": ("Asia Pacific (Sydney)", "AUS", None),
    "ap-southeast-3": ("Asia Pacific (Jakarta)", "IDN", None),
    "ap-east-1": ("Asia Pacific (Hong Kong)", "HKG", None),
    "me-central-1": ("Middle East (UAE)", "ARE", None),
    "me-south-1": ("Middle East (Bahrain)", "BHR", None),
    "af-south-1": ("Africa (Cape Town)", "ZAF", None),
    "il-central-1": ("Israel (Tel Aviv)", "ISR", None),
    "cn-north-1": ("China (Beijing)", "CHN", None),
    "cn-northwest-1": ("China (Ningxia)", "CHN", None),
}

_AZURE: dict[str, tuple[str, str, str | None]] = {
    "eastus": ("East US (Virginia)", "USA", "virginia"),
    "eastus2": ("East US 2 (Virginia)", "USA", "virginia"),
    "centralus": ("Central US (Iowa)", "USA", "iowa"),
    "northcentralus": ("North Central US (Illinois)", "USA", "illinois"),
    "southcentralus": ("South Central US (Texas)", "USA", "texas"),
    "westus": ("West US (California)", "USA", "california"),
    "westus2": ("West US 2 (Washington)", "USA", "washington"),
    "westus3": ("West US 3 (Arizona)", "USA", "arizona"),
    "westcentralus": ("West Central US (Wyoming)", "USA", "wyoming"),
    "canadacentral": ("Canada Central (Toronto)", "CAN", "ca:ontario"),
    "canadaeast": ("Canada East (Quebec City)", "CAN", "ca:quebec"),
    "brazilsouth": ("Brazil South (Sao Paulo)", "BRA", None),
    "northeurope": ("North Europe (Ireland)", "IRL", None),
    "westeurope": ("West Europe (Netherlands)", "NLD", None),
    "uksouth": ("UK South (London)", "GBR", None),
    "ukwest": ("UK West (Cardiff)", "GBR", None),
    "francecentral": ("France Central (Paris)", "FRA", None),
    "germanywestcentral": ("Germany West Central (Frankfurt)", "DEU", None),
    "switzerlandnorth": ("Switzerland North (Zurich)", "CHE", None),
    "norwayeast": ("Norway East (Oslo)", "NOR", "NO1"),
    "swedencentral": ("Sweden Central (Gavle)", "SWE", "SE3"),
    "polandcentral": ("Poland Central (Warsaw)", "POL", None),
    "italynorth": ("Italy North (Milan)", "ITA", None),
    "eastasia": ("East Asia (Hong Kong)", "HKG", None),
    "southeastasia": ("Southeast Asia (Singapore)", "SGP", None),
    "japaneast": ("Japan East (Tokyo)", "JPN", None),
    "japanwest": ("Japan West (Osaka)", "JPN", None),
    "koreacentral": ("Korea Central (Seoul)", "KOR", None),
    "centralindia": ("Central India (Pune)", "IND", None),
    "southindia": ("South India (Chennai)", "IND", None),
    "australiaeast": ("Australia East (New South Wales)", "AUS", None),
    "australiasoutheast": ("Australia Southeast (Victoria)", "AUS", None),
    "uaenorth": ("UAE North (Dubai)", "ARE", None),
    "southafricanorth": ("South Africa North (Johannesburg)", "ZAF", None),
    "qatarcentral": ("Qatar Central (Doha)", "QAT", None),
}

# Canadian mix keys -> keys of carbon_intensity_per_source.json
_CA_SOURCES = {
    "coal": "coal",
    "petroleum": "petroleum",
    "naturalGas": "natural_gas",
    "nuclear": "nuclear",
    "hydro": "hydroelectricity",
    "wind": "wind",
    "solar": "solar",
    "biomass": "biomass",
}


def _lbs_per_mwh_to_g_per_kwh(lbs_per_mwh: float) -> float:
    return lbs_per_mwh * KG_PER_LB * G_PER_KG / 1000.0


class Inputs:
    """The files read from the two wheels."""

    def __init__(self, codecarbon_whl: Path, pycountry_whl: Path) -> None:
        with zipfile.ZipFile(codecarbon_whl) as zf:
            base = "codecarbon/data/"
            self.mix = json.loads(zf.read(base + "private_infra/global_energy_mix.json"))
            self.factors = json.loads(
                zf.read(base + "private_infra/carbon_intensity_per_source.json")
            )
            impact = zf.read(base + "cloud/impact.csv").decode("utf-8-sig")
            self.gcp = list(csv.DictReader(io.StringIO(impact)))
            self.usa = json.loads(zf.read(base + "private_infra/2023/usa_emissions.json"))
            self.canada = json.loads(zf.read(base + "private_infra/2023/canada_energy_mix.json"))
            self.nordic = json.loads(zf.read(base + "private_infra/nordic_emissions.json"))
        with zipfile.ZipFile(pycountry_whl) as zf:
            iso = json.loads(zf.read("pycountry/databases/iso3166-1.json"))
        self.alpha2 = {c["alpha_3"]: c["alpha_2"] for c in iso["3166-1"]}


def _country_intensity(inp: Inputs, alpha3: str) -> tuple[float, str, int] | None:
    row = inp.mix.get(alpha3)
    if row is None:
        return None
    year = int(row["year"])
    ci = row.get("carbon_intensity")
    if ci:
        return float(ci), f"Our World in Data, carbon intensity of electricity ({CC})", year
    total = float(row.get("total_TWh") or 0.0)
    if total <= 0:
        return None
    weighted = sum(
        float(twh) * inp.factors[key.removesuffix("_TWh")]
        for key, twh in row.items()
        if key.endswith("_TWh") and key.removesuffix("_TWh") in inp.factors
    )
    src = f"derived from Our World in Data generation mix x per-source factors ({CC})"
    return weighted / total, src, year


def _canada_province(inp: Inputs, province: str) -> tuple[float, str, int]:
    mix = inp.canada[province]
    g = sum(mix.get(k, 0.0) * inp.factors[f] for k, f in _CA_SOURCES.items()) / mix["total"]
    return g, f"derived from Canadian provincial generation mix 2023, {province} ({CC})", 2023


def _location(inp: Inputs, country: str, sub: str | None) -> tuple[float, str, int]:
    if sub is None:
        found = _country_intensity(inp, country)
        if found is None:
            raise SystemExit(f"no country figure for {country}; fix the region table")
        return found
    if sub.startswith("ca:"):
        return _canada_province(inp, sub.removeprefix("ca:"))
    if sub in inp.nordic["data"]:
        zone = inp.nordic["data"][sub]
        src = f"ENTSO-E generation mix, bidding zone {sub} ({CC})"
        return float(zone["emission_factor"]), src, int(zone["year"])
    state = inp.usa[sub]
    year = int(inp.usa["_source"]["year"])
    g = _lbs_per_mwh_to_g_per_kwh(float(state["emissions"]))
    return g, f"EPA eGRID{year} state output emission rate, {sub} ({CC})", year


def rows(inp: Inputs) -> Iterator[dict[str, object]]:
    """Every row of the table: the world default, countries, then cloud regions."""
    world = float(inp.factors["world_average"])
    src = f"IEA Global Energy & CO2 Status Report 2019 ({CC})"
    yield _row("WORLD", "", "world", "", "World average", "", world, src, WORLD_YEAR)
    for alpha3 in sorted(inp.mix):
        if alpha3 not in inp.alpha2:
            continue  # OWID aggregates that are not ISO 3166 countries
        found = _country_intensity(inp, alpha3)
        if found is None:
            continue
        g, src, year = found
        name = inp.mix[alpha3]["country_name"]
        yield _row(alpha3, inp.alpha2[alpha3], "country", "", name, alpha3, g, src, year)
    for r in sorted(inp.gcp, key=lambda r: r["region"]):
        region = r["region"].replace("me-cenrtal1", "me-central1")
        src = f"Google Cloud region carbon data, grid intensity ({CC})"
        name = f"{r['city']}, {r['country_name']}"
        g = float(r["impact"])
        yield _row(region, "", "cloud", "gcp", name, r["countryIsoCode"], g, src, GCP_YEAR)
    for provider, table in (("aws", _AWS), ("azure", _AZURE)):
        for region, (name, country, sub) in sorted(table.items()):
            g, src, year = _location(inp, country, sub)
            src = f"location-based: {src}"
            yield _row(region, "", "cloud", provider, name, country, g, src, year)


def _row(
    code: str,
    alias: str,
    kind: str,
    provider: str,
    name: str,
    country: str,
    g: float,
    source: str,
    year: int,
) -> dict[str, object]:
    return {
        "code": code,
        "alias": alias,
        "kind": kind,
        "provider": provider,
        "name": name,
        "country": country,
        "g_per_kwh": f"{g:.1f}",
        "source": source,
        "year": year,
    }


def _download(dest: Path) -> tuple[Path, Path]:
    for spec in (CODECARBON, PYCOUNTRY):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(dest)]
        subprocess.run(cmd, check=True)
    return _find(dest)


def _find(folder: Path) -> tuple[Path, Path]:
    cc = folder / (CODECARBON.replace("==", "-") + "-py3-none-any.whl")
    pc = folder / (PYCOUNTRY.replace("==", "-") + "-py3-none-any.whl")
    for whl in (cc, pc):
        if not whl.is_file():
            raise SystemExit(f"missing {whl.name} in {folder}: run without --wheels to download")
    return cc, pc


def write(table: list[dict[str, object]], out: Path) -> None:
    """Write atomically: a half-written table must never be shipped."""
    tmp = out.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="folder holding the two pinned wheels")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.wheels:
        inputs = Inputs(*_find(args.wheels))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            inputs = Inputs(*_download(Path(tmp)))
    table = list(rows(inputs))
    codes = [str(r["code"]).lower() for r in table] + [
        str(r["alias"]).lower() for r in table if r["alias"]
    ]
    dupes = sorted({c for c in codes if codes.count(c) > 1})
    if dupes:
        raise SystemExit(f"duplicate region codes: {dupes}")
    write(table, args.out)
    kinds = {k: sum(r["kind"] == k for r in table) for k in ("country", "cloud")}
    print(f"wrote {len(table)} rows ({kinds}) to {args.out}")


if __name__ == "__main__":
    main()
