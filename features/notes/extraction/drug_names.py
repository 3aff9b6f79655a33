"""The drug lexicon: generic and brand names, and the allergens an allergy may name.

`brand_generic.csv` is the checked brand -> generic table (tests/notes/test_brand_table.py):
its brands and generics join the lexicon, and `generic_of` names a brand's generic.
"""

import csv
import re
from pathlib import Path

from .text import words

# fmt: off
DRUG_NAMES = words("""
    lisinopril enalapril ramipril benazepril quinapril captopril fosinopril perindopril losartan
    valsartan irbesartan olmesartan candesartan telmisartan amlodipine nifedipine diltiazem
    verapamil felodipine metoprolol atenolol carvedilol propranolol bisoprolol labetalol
    nebivolol nadolol hydrochlorothiazide hctz chlorthalidone furosemide bumetanide torsemide
    spironolactone eplerenone triamterene indapamide metolazone hydralazine clonidine doxazosin
    terazosin prazosin nitroglycerin digoxin amiodarone sotalol flecainide dofetilide dronedarone
    warfarin apixaban rivaroxaban dabigatran edoxaban heparin enoxaparin clopidogrel prasugrel
    ticagrelor aspirin atorvastatin simvastatin rosuvastatin pravastatin lovastatin ezetimibe
    fenofibrate gemfibrozil niacin ranolazine ivabradine midodrine metformin glipizide glyburide
    glimepiride pioglitazone sitagliptin linagliptin saxagliptin empagliflozin dapagliflozin
    canagliflozin liraglutide semaglutide dulaglutide exenatide tirzepatide insulin albuterol
    levalbuterol ipratropium tiotropium fluticasone budesonide mometasone beclomethasone
    salmeterol formoterol montelukast prednisone prednisolone methylprednisolone dexamethasone
    hydrocortisone benzonatate guaifenesin dextromethorphan cetirizine loratadine fexofenadine
    diphenhydramine hydroxyzine pseudoephedrine omeprazole esomeprazole pantoprazole lansoprazole
    rabeprazole famotidine ranitidine ondansetron metoclopramide prochlorperazine promethazine
    docusate senna sennosides bisacodyl lactulose loperamide sucralfate simethicone dicyclomine
    mesalamine acetaminophen paracetamol ibuprofen naproxen meloxicam diclofenac celecoxib
    ketorolac indomethacin tramadol oxycodone hydrocodone morphine hydromorphone fentanyl codeine
    methadone buprenorphine naloxone gabapentin pregabalin cyclobenzaprine methocarbamol
    tizanidine baclofen lidocaine capsaicin colchicine allopurinol febuxostat sumatriptan
    sertraline fluoxetine citalopram escitalopram paroxetine venlafaxine desvenlafaxine
    duloxetine bupropion mirtazapine trazodone amitriptyline nortriptyline buspirone lorazepam
    alprazolam clonazepam diazepam zolpidem quetiapine olanzapine risperidone aripiprazole
    haloperidol lithium lamotrigine levetiracetam valproate divalproex carbamazepine
    oxcarbazepine topiramate phenytoin donepezil memantine levodopa carbidopa ropinirole
    pramipexole methylphenidate amphetamine melatonin amoxicillin ampicillin penicillin
    cephalexin cefazolin ceftriaxone cefuroxime cefdinir cefepime azithromycin clarithromycin
    erythromycin doxycycline minocycline tetracycline ciprofloxacin levofloxacin moxifloxacin
    trimethoprim sulfamethoxazole nitrofurantoin metronidazole clindamycin vancomycin linezolid
    piperacillin meropenem gentamicin acyclovir valacyclovir oseltamivir fluconazole nystatin
    terbinafine mupirocin ivermectin hydroxychloroquine levothyroxine liothyronine methimazole
    propylthiouracil estradiol progesterone testosterone alendronate medroxyprogesterone
    tamsulosin finasteride oxybutynin sildenafil tadalafil phenazopyridine cyanocobalamin
    multivitamin multivitamins cisplatin carboplatin etoposide paclitaxel docetaxel pemetrexed
    gemcitabine
    cyclophosphamide doxorubicin methotrexate fluorouracil capecitabine tamoxifen anastrozole
    letrozole pembrolizumab nivolumab rituximab trastuzumab bevacizumab imatinib adalimumab
    etanercept infliximab azathioprine mycophenolate tacrolimus cyclosporine epinephrine
    varenicline sacubitril valganciclovir ketoconazole clotrimazole triamcinolone clobetasol
    hydroxyurea amoxicillin-clavulanate betamethasone
    tylenol advil motrin aleve excedrin lasix bumex demadex aldactone coreg toprol lopressor
    tenormin norvasc cardizem zestril prinivil vasotec altace cozaar diovan benicar avapro
    micardis entresto lipitor zocor crestor pravachol zetia plavix brilinta eliquis xarelto
    pradaxa coumadin lovenox glucophage januvia jardiance farxiga invokana ozempic wegovy
    trulicity victoza mounjaro lantus humalog novolog levemir tresiba basaglar synthroid
    levoxyl prozac zoloft lexapro celexa paxil effexor cymbalta wellbutrin remeron desyrel
    xanax ativan klonopin valium ambien seroquel abilify zyprexa risperdal lamictal keppra
    depakote tegretol topamax dilantin neurontin lyrica flexeril robaxin zanaflex ultram
    percocet norco vicodin oxycontin dilaudid celebrex mobic voltaren toradol prilosec nexium
    protonix pepcid zantac zofran reglan colace senokot dulcolax imodium miralax flomax proscar
    detrol viagra cialis augmentin keflex zithromax bactrim cipro levaquin flagyl macrobid
    valtrex tamiflu diflucan medrol decadron proair ventolin spiriva advair symbicort flovent
    singulair zyrtec claritin allegra benadryl sudafed mucinex humira enbrel remicade plaquenil
    keytruda opdivo narcan chantix adderall ritalin aricept namenda sinemet requip zyloprim
    uloric imitrex lanoxin cordarone imdur nitrostat microzide k-dur klor-con premarin fosamax
    epipen tums maalox mylanta pepto-bismol dramamine z-pak z-pack lotrimin lamisil bengay
""") | frozenset({
    "ferrous sulfate", "ferrous gluconate", "folic acid", "vitamin b12", "vitamin b-12",
    "vitamin d", "vitamin d3", "vitamin c", "potassium chloride", "magnesium oxide",
    "calcium carbonate", "insulin glargine", "insulin lispro", "insulin aspart",
    "insulin detemir", "isosorbide mononitrate", "isosorbide dinitrate", "polyethylene glycol",
    "fish oil", "benzoyl peroxide", "salicylic acid", "nicotine patch", "nicotine gum",
    "icy hot", "sodium bicarbonate",
})
ALLERGENS = DRUG_NAMES | words("""
    sulfa sulfonamides sulfonamide penicillins latex peanuts peanut nuts shellfish eggs egg soy
    wheat gluten bees iodine contrast adhesive tape pollen dust mold cats dogs nsaids opioids
    opiates cephalosporins strawberries fish milk
""")
# fmt: on
# Brands that are also everyday phrases in a note ("plan b" of a plan A/B) are not looked for.
_AMBIGUOUS_BRANDS = frozenset({"plan b"})


def _read_brand_table() -> dict[str, str]:
    with (Path(__file__).with_name("brand_generic.csv")).open(encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh)
        table = {" ".join(row["brand"].lower().split()): row["generic"] for row in rows}
    return {brand: generic for brand, generic in table.items() if brand not in _AMBIGUOUS_BRANDS}


BRAND_GENERIC = _read_brand_table()
DRUG_NAMES = (
    DRUG_NAMES
    | frozenset(BRAND_GENERIC)
    | frozenset(part for generic in BRAND_GENERIC.values() for part in generic.split(" / "))
)


ALLERGENS = ALLERGENS | DRUG_NAMES


def _brand_key(name: str) -> str:
    return re.sub(r"[\s-]+", " ", name.lower()).strip()


_GENERIC_BY_BRAND = {_brand_key(brand): generic for brand, generic in BRAND_GENERIC.items()}


def generic_of(name: str) -> str | None:
    """The generic name of a brand as written ("Lasix", "toprol xl" -> ...); None for a name
    that is not a known brand."""
    return _GENERIC_BY_BRAND.get(_brand_key(name))


MULTIWORD_PATTERNS: dict[str, list[re.Pattern[str]]] = {}
for _name in sorted((n for n in DRUG_NAMES if " " in n), key=len, reverse=True):
    MULTIWORD_PATTERNS.setdefault(_name.split()[0], []).append(
        re.compile(r"\s+".join(re.escape(part) for part in _name.split()))
    )
LEXICON_WORDS = frozenset(n for n in DRUG_NAMES if " " not in n) | frozenset(MULTIWORD_PATTERNS)
